"""``fluxify-lab up`` holds a shaped lab until SIGTERM and then leaves nothing behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fluxify.lab.standing import LAB_PREFIX
from fluxify.lab.testbed import list_namespaces

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"),
]
LAB = str(Path(sys.executable).parent / "fluxify-lab")


def test_up_builds_a_shaped_lab_and_sigterm_removes_it() -> None:
    before = {n for n in list_namespaces() if n.startswith(LAB_PREFIX)}
    process = subprocess.Popen(
        [LAB, "up", "--uplinks", "2", "--delay", "10", "--rate", "40"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert " is up" in banner, banner
        client_ns = banner.split()[1] + "-cli"
        ping = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                client_ns,
                "ping",
                "-n",
                "-c",
                "3",
                "-i",
                "0.2",
                "-I",
                "wan1",
                "198.18.0.1",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
        assert ping.returncode == 0, ping.stderr
        avg_ms = float(ping.stdout.rsplit("=", 1)[1].split("/")[1])
        assert avg_ms >= 19  # 10 ms each way on uplink 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if {n for n in list_namespaces() if n.startswith(LAB_PREFIX)} == before:
            break
        time.sleep(0.2)
    assert {n for n in list_namespaces() if n.startswith(LAB_PREFIX)} == before
    assert process.returncode == 0


def test_bad_shaping_values_name_the_flag() -> None:
    result = subprocess.run(
        [LAB, "up", "--loss", "1,2,3"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "--loss" in result.stderr and result.stderr.count("\n") == 1


def test_a_burst_of_stop_signals_still_removes_the_lab() -> None:
    """Ctrl-C in a terminal reaches the lab with the signal a wrapper (``timeout``, ``flock``)
    forwards right behind it. The handler once set a ``threading.Event``: a second signal
    while the first handler held the event's lock deadlocked the lab for good."""
    before = {n for n in list_namespaces() if n.startswith(LAB_PREFIX)}
    process = subprocess.Popen([LAB, "up", "--uplinks", "1"], stdout=subprocess.PIPE, text=True)
    name = ""
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert " is up" in banner, banner
        name = banner.split()[1]
        for _ in range(50):
            process.send_signal(signal.SIGINT)
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:  # deadlocked: remove this lab's namespaces by hand
            process.kill()
            process.wait()
            for netns in list_namespaces():
                if name and netns.startswith(name):
                    subprocess.run(["ip", "netns", "del", netns], check=False)
    assert {n for n in list_namespaces() if n.startswith(LAB_PREFIX)} == before
