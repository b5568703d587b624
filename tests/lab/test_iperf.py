"""The iperf3 command lines of one TCP and one UDP run, against a recording test bed."""

import json
import subprocess
from typing import Any, cast

from fluxify.lab.iperf import iperf, iperf_udp
from fluxify.lab.testbed import Testbed

TCP_REPORT = {"end": {"sum_received": {"bits_per_second": 9e8, "seconds": 2.0}, "sum_sent": {}}}
UDP_REPORT = {"end": {"sum_received": {"packets": 10, "lost_packets": 1, "seconds": 2.0}}}


class RecordingBed:
    """Runs nothing: keeps the argv of every spawn and run, answers ``report``."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        self.spawned: list[tuple[str, list[str]]] = []
        self.ran: list[tuple[str, list[str]]] = []

    def spawn(self, netns: str, argv: list[str], **_kwargs: Any) -> subprocess.Popen[bytes]:
        self.spawned.append((netns, argv))
        return subprocess.Popen(["true"])

    def run(self, netns: str, argv: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.ran.append((netns, argv))
        return subprocess.CompletedProcess(argv, 0, json.dumps(self.report), "")


def _client_options(bed: RecordingBed) -> list[str]:
    ((netns, argv),) = bed.ran
    assert netns == "c"
    assert argv[:8] == ["iperf3", "-c", "10.0.0.1", "-p", "5301", "-t", "2", "-J"]
    assert argv[8:10] == ["--connect-timeout", "3000"]
    return argv[10:]


def test_tcp_options() -> None:
    bed = RecordingBed(TCP_REPORT)
    result = iperf(cast(Testbed, bed), client_ns="c", server_ns="s", target="10.0.0.1", seconds=2)
    assert result.mbit_s == 900.0
    assert bed.spawned == [("s", ["iperf3", "-s", "-1", "-p", "5301"])]
    assert _client_options(bed) == []
    bed = RecordingBed(TCP_REPORT)
    iperf(
        cast(Testbed, bed),
        client_ns="c",
        server_ns="s",
        target="10.0.0.1",
        seconds=2,
        bind_dev="wan1",
        reverse=True,
        rate="40M",
    )
    assert _client_options(bed) == ["-b", "40M", "--bind-dev", "wan1", "-R"]


def test_udp_options() -> None:
    bed = RecordingBed(UDP_REPORT)
    result = iperf_udp(
        cast(Testbed, bed),
        client_ns="c",
        server_ns="s",
        target="10.0.0.1",
        seconds=2,
        length=1200,
        rate="0",
        reverse=True,
    )
    assert result.received == 9
    assert _client_options(bed) == ["-u", "-l", "1200", "-b", "0", "-R"]
    bed = RecordingBed(UDP_REPORT)
    iperf_udp(
        cast(Testbed, bed),
        client_ns="c",
        server_ns="s",
        target="10.0.0.1",
        seconds=2,
        length=64,
        rate="10M",
        bind_dev="wan2",
    )
    assert _client_options(bed) == ["-u", "-l", "64", "-b", "10M", "--bind-dev", "wan2"]
