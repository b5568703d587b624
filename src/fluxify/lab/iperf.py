"""iperf3 between namespaces of a test bed: one measured TCP run (Mbit/s) or UDP run (packets/s)."""

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from fluxify.errors import HostError
from fluxify.lab.testbed import Testbed

IPERF_PORT = 5301
STARTUP_GRACE_S = 0.3


@dataclass(frozen=True)
class IperfResult:
    """Receiver goodput (Mbit/s), sender retransmits, measured duration."""

    mbit_s: float
    retransmits: int
    seconds: float


def iperf(
    bed: Testbed,
    *,
    client_ns: str,
    server_ns: str,
    target: str,
    seconds: float,
    bind_dev: str | None = None,
    reverse: bool = False,
    port: int = IPERF_PORT,
    rate: str | None = None,
) -> IperfResult:
    """One TCP stream from ``client_ns`` to ``target`` (an address in ``server_ns``).

    ``bind_dev`` pins the client to one interface (SO_BINDTODEVICE), which is how a single
    uplink is measured alone. ``reverse`` measures the download direction; ``rate`` (iperf3's
    ``-b``, e.g. ``"40M"``) caps the sender.
    """
    return _parse(
        _measure(
            bed,
            client_ns=client_ns,
            server_ns=server_ns,
            target=target,
            seconds=seconds,
            port=port,
            bind_dev=bind_dev,
            reverse=reverse,
            extra=[] if rate is None else ["-b", rate],
        )
    )


def _run_client(bed: Testbed, netns: str, argv: list[str], seconds: float) -> dict[str, Any]:
    for _attempt in range(20):  # the server needs a moment to listen; bounded retries
        done = bed.run(netns, argv, check=False, timeout=seconds + 30)
        try:
            report: dict[str, Any] = json.loads(done.stdout or "{}")
        except json.JSONDecodeError:
            report = {"error": done.stdout[-200:] or done.stderr[-200:]}
        error = str(report.get("error", ""))
        if "Connection refused" not in error:
            return report
        time.sleep(STARTUP_GRACE_S)
    return report


def _parse(report: dict[str, Any]) -> IperfResult:
    if "error" in report:
        raise HostError(f"iperf3 failed: {report['error']}")
    end = report["end"]
    received = end["sum_received"]
    sent = end.get("sum_sent", {})
    return IperfResult(
        mbit_s=round(received["bits_per_second"] / 1e6, 2),
        retransmits=int(sent.get("retransmits", 0)),
        seconds=round(received["seconds"], 2),
    )


@dataclass(frozen=True)
class UdpResult:
    """One UDP run: datagrams the sender sent, how many the receiver got, over ``seconds``."""

    sent: int
    received: int
    seconds: float

    @property
    def packets_s(self) -> float:
        """Datagrams per second received at the far end."""
        return round(self.received / self.seconds, 1) if self.seconds > 0 else 0.0

    @property
    def loss_percent(self) -> float:
        """Datagrams sent but not received, in percent of those sent."""
        if self.sent <= 0:
            return 0.0
        return round(100 * max(0, self.sent - self.received) / self.sent, 2)


def iperf_udp(
    bed: Testbed,
    *,
    client_ns: str,
    server_ns: str,
    target: str,
    seconds: float,
    length: int,
    rate: str,
    bind_dev: str | None = None,
    reverse: bool = False,
    port: int = IPERF_PORT,
) -> UdpResult:
    """One UDP stream of ``length``-byte datagrams at ``rate`` (iperf3 ``-u -l -b``; "0" is as
    fast as the sender can), as in :func:`iperf`; what the receiving end counted."""
    return parse_udp(
        _measure(
            bed,
            client_ns=client_ns,
            server_ns=server_ns,
            target=target,
            seconds=seconds,
            port=port,
            bind_dev=bind_dev,
            reverse=reverse,
            extra=["-u", "-l", str(length), "-b", rate],
        )
    )


def parse_udp(report: dict[str, Any]) -> UdpResult:
    """The UDP counts of an iperf3 ``-u -J`` report: ``end.sum_received`` counts the datagrams
    the receiver expected up to the last one it saw and the gaps (``lost_packets``);
    ``end.sum_sent`` what left the sender, in either direction."""
    if "error" in report:
        raise HostError(f"iperf3 failed: {report['error']}")
    end = report["end"]
    received = end["sum_received"]
    got = int(received["packets"]) - int(received["lost_packets"])
    sent = int(end.get("sum_sent", received)["packets"])
    return UdpResult(sent=max(sent, got), received=got, seconds=round(received["seconds"], 3))


def _measure(
    bed: Testbed,
    *,
    client_ns: str,
    server_ns: str,
    target: str,
    seconds: float,
    port: int,
    bind_dev: str | None,
    reverse: bool,
    extra: list[str],
) -> dict[str, Any]:
    """One iperf3 run with ``extra`` client options against a one-off server: its JSON report.
    ``bind_dev`` and ``reverse`` as :func:`iperf` and :func:`iperf_udp` take them."""
    server = bed.spawn(
        server_ns,
        ["iperf3", "-s", "-1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        argv = ["iperf3", "-c", target, "-p", str(port), "-t", f"{seconds:g}", "-J"]
        argv += ["--connect-timeout", "3000", *extra]
        if bind_dev is not None:
            argv += ["--bind-dev", bind_dev]
        if reverse:
            argv.append("-R")
        return _run_client(bed, client_ns, argv, seconds)
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=10)
