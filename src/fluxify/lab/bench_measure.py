"""Measurement primitives of the lab benchmarks: goodput, ping RTT and process CPU time.

Each one measures a single run inside a deployment's test bed; the scenarios repeat them and
take medians (``lab.bench_report``).
"""

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from fluxify.errors import HostError
from fluxify.lab.deployment import Deployment, wait_until
from fluxify.lab.iperf import iperf

DIRECTIONS = ("upload", "download")
BENCH_CLIENT = "bench"
PING_COUNT = 20
PING_INTERVAL_S = 0.2
RTT_PATTERN = re.compile(r"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms")
STAT_UTIME_FIELD = 13  # /proc/<pid>/stat fields after "(comm)": index of utime (man 5 proc)
BITS_PER_GB = 8e9


@dataclass(frozen=True)
class Throughput:
    """One iperf3 run: receiver goodput and the bytes it moved."""

    mbit_s: float
    seconds: float

    @property
    def gigabytes(self) -> float:
        return self.mbit_s * 1e6 * self.seconds / BITS_PER_GB


def single(dep: Deployment, number: int, seconds: float, direction: str) -> Throughput:
    """One TCP stream over uplink ``number`` alone (bound to it) to the server: the raw link."""
    result = iperf(
        dep.bed,
        client_ns=dep.t.client_ns,
        server_ns=dep.t.server_ns,
        target=str(dep.t.server_v4.ip),
        seconds=seconds,
        bind_dev=dep.t.uplink(number).ifname,
        reverse=direction == "download",
    )
    return Throughput(result.mbit_s, result.seconds)


def tunneled(
    dep: Deployment, seconds: float, direction: str, *, server_ns: str = "", target: str = ""
) -> Throughput:
    """One TCP stream through a tunnel: by default Fluxify's, to the internet host."""
    result = iperf(
        dep.bed,
        client_ns=dep.t.client_ns,
        server_ns=server_ns or dep.t.internet_ns,
        target=target or str(dep.t.internet_host_v4.ip),
        seconds=seconds,
        reverse=direction == "download",
    )
    return Throughput(result.mbit_s, result.seconds)


def ping_rtt_ms(dep: Deployment, target: str, *, interface: str | None = None) -> float:
    """Average RTT (ms) of ``PING_COUNT`` pings from the client namespace to ``target``."""
    argv = ["ping", "-n", "-q", "-c", str(PING_COUNT), "-i", str(PING_INTERVAL_S), "-W", "2"]
    if interface is not None:
        argv += ["-I", interface]
    done = dep.bed.run(dep.t.client_ns, [*argv, target], check=False, timeout=PING_COUNT + 10)
    match = RTT_PATTERN.search(done.stdout)
    if match is None:
        raise HostError(f"ping {target} gave no RTT: {done.stdout.strip()[-200:]}")
    return float(match.group(1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError as exc:
        raise HostError(f"cannot read the CPU time of process {pid}: {exc}") from exc
    fields = text.rsplit(")", 1)[1].split()
    utime, stime = int(fields[STAT_UTIME_FIELD - 2]), int(fields[STAT_UTIME_FIELD - 1])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def cpu_per_gb(
    pids: Sequence[int], measure: Callable[[], Throughput]
) -> tuple[tuple[float, ...], Throughput]:
    """CPU seconds per GB moved of each of ``pids`` over one ``measure()`` run, and the run (a
    cost per GB means little without the rate it was paid at)."""
    before = [cpu_seconds(pid) for pid in pids]
    moved = measure()
    after = [cpu_seconds(pid) for pid in pids]
    if moved.gigabytes <= 0:
        raise HostError("the CPU measurement moved no data")
    per_gb = tuple(round((a - b) / moved.gigabytes, 2) for a, b in zip(after, before, strict=True))
    return per_gb, moved


@contextmanager
def fluxify_running(
    dep: Deployment, protocol: str = "v2", *, backup: str = ""
) -> Iterator[tuple[int, int]]:
    """A Fluxify server and bonding client over every uplink; yields their (client, server) pids.

    ``protocol`` "v1" makes the client offer no extension (the original round robin), for
    comparison. ``backup`` (an uplink's ifname) makes that uplink carry data only while the
    others are dead: Fluxify over the remaining one alone. Stopped on leaving, so baselines or
    raw measurements after it see an untouched client.
    """
    if not (dep.workdir / f"client-{BENCH_CLIENT}").exists():
        dep.issue(BENCH_CLIENT)
    dep.start_server()
    try:
        dep.start_client(
            BENCH_CLIENT,
            ifaces=",".join(u.ifname for u in dep.t.uplinks),
            extra_args=("-protocol", protocol, *(("-backup", backup) if backup else ())),
        )
        try:
            wait_until("the tunnel to carry a ping", dep.ping_internet)
            assert dep.server is not None
            yield dep.clients[BENCH_CLIENT].pid, dep.server.pid
        finally:
            dep.stop_client(BENCH_CLIENT)
    finally:
        dep.stop_server()


def path_alive(dep: Deployment, label: str) -> bool:
    """Whether the bench client's stats show path ``label`` alive."""
    paths = dep.client_stats(BENCH_CLIENT).get("paths", [])
    return any(p.get("label") == label and p.get("alive") for p in paths)
