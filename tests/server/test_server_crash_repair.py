"""A SIGKILLed server leaves its nft table and sysctls behind; the next start repairs them.

The real ``fluxify-server`` runs in a namespace of its own (``fhs-...``): start, SIGKILL,
start again (the leftovers undone, the host set up afresh: one table, forwarding, the TUN up with
its address), stop; then the namespace's nftables ruleset, sysctls, links, addresses and routes
are what they were before the first start.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxify.protocol.addresses import SERVER_TUN_V4
from tests.linux.conftest import requires_root, throwaway_netns

pytestmark = [pytest.mark.root, requires_root]

SERVER = Path(sys.executable).parent / "fluxify-server"
WAIT_S = 60.0  # a busy machine: generous, and only ever waited for a condition


def wait_for(what: str, condition: Callable[[], bool], proc: "subprocess.Popen[Any]") -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert proc.poll() is None, f"the server exited ({proc.returncode}) waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def snapshot(netns: str) -> dict[str, str]:
    def run(*argv: str) -> str:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def sysctl(name: str) -> str:
        return run("ip", "netns", "exec", netns, "sysctl", "-n", name).strip()

    return {
        "nftables": run("ip", "netns", "exec", netns, "nft", "list", "ruleset"),
        "forward4": sysctl("net.ipv4.ip_forward"),
        "forward6": sysctl("net.ipv6.conf.all.forwarding"),
        "links": run("ip", "-n", netns, "-o", "link", "show"),
        "addresses": run("ip", "-n", netns, "-o", "address", "show"),
        "routes4": run("ip", "-n", netns, "route", "show", "table", "all"),
        "routes6": run("ip", "-n", netns, "-6", "route", "show", "table", "all"),
    }


@pytest.fixture
def server_netns() -> Iterator[str]:
    with throwaway_netns("fhs") as name:
        yield name


class ServerRuns:
    """Starts ``fluxify-server`` in ``netns``; every process it started is killed at the end."""

    def __init__(self, netns: str, workdir: Path) -> None:
        self.netns = netns
        self.state = workdir / "state"
        self.pki = workdir / "pki"
        self.log = workdir / "server.log"
        self.processes: list[subprocess.Popen[Any]] = []

    def start(self) -> "subprocess.Popen[Any]":
        (self.state / "server-stats.json").unlink(missing_ok=True)
        env = {**os.environ, "FLUXIFY_STATE_DIR": str(self.state)}
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    SERVER,
                    "-pki",
                    self.pki,
                    "-hosts",
                    "127.0.0.1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.processes.append(proc)
        wait_for("the server's first stats", (self.state / "server-stats.json").exists, proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_a_sigkilled_server_is_repaired_by_its_next_start(
    server_netns: str, tmp_path: Path
) -> None:
    before = snapshot(server_netns)
    assert before["forward4"] == "0"  # so "restored" below means the crash's "1" was undone
    runs = ServerRuns(server_netns, tmp_path)
    try:
        first = runs.start()
        running = snapshot(server_netns)
        assert "table inet fluxify" in running["nftables"]
        assert running["forward4"] == "1" and running["forward6"] == "1"
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
        crashed = snapshot(server_netns)
        assert "table inet fluxify" in crashed["nftables"]  # what the crash left behind
        assert crashed["forward4"] == "1"
        assert crashed["links"] == before["links"]  # the TUN went with the process's fd
        assert (runs.state / "server.json").exists()  # and its journal says how to undo it

        second = runs.start()
        assert "undid" in runs.log.read_text()
        # the repaired host is set up afresh: one table, forwarding on, a TUN up with its address
        again = snapshot(server_netns)
        assert again["nftables"].count("table inet fluxify") == 1
        assert again["forward4"] == "1" and again["forward6"] == "1"
        known = {line.split(": ")[1] for line in before["links"].splitlines()}
        tun_links = [x for x in again["links"].splitlines() if x.split(": ")[1] not in known]
        assert len(tun_links) == 1 and ",UP" in tun_links[0], again["links"]
        assert f"{SERVER_TUN_V4}/" in again["addresses"]
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    finally:
        runs.kill_all()
    after = snapshot(server_netns)
    assert after == before, runs.log.read_text()[-3000:]
    assert not (runs.state / "server.json").exists()
