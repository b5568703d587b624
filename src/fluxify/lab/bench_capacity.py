"""The ``capacity`` scenario of ``fluxify-bench lab``: what one server process moves per core.

One server; 1, then 2, then 3 bonding clients, each in its own client home behind the same two
unshaped ISPs, each moving one TCP stream at the same time. For every session count and
direction: the sessions' summed goodput, and the server's CPU seconds over those runs, which give
the server's capacity per core (Gbit moved per server CPU second) and the cores it used. The
clients, iperf3 and the server share this machine's cores, so the summed goodput is the box's,
not the server's; the per-core figure is the server's own. ``docs/multicore.md`` explains what
it means for more cores.
"""

import time
from concurrent.futures import ThreadPoolExecutor

from fluxify.lab.bench_measure import DIRECTIONS, cpu_seconds
from fluxify.lab.bench_report import ScenarioResult
from fluxify.lab.bench_scenarios import BenchConfig
from fluxify.lab.deployment import Deployment
from fluxify.lab.iperf import IperfResult, iperf

SESSION_COUNTS = (1, 2, 3)
CLIENT_PREFIX = "cap"
FIRST_PORT = 5311


def capacity(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
    """Scenario ``capacity``: summed goodput and server capacity per core, 1..3 sessions."""
    dep.start_server()
    homes: list[str] = []
    try:
        for count in SESSION_COUNTS:
            while len(homes) < count:
                homes.append(_start_client(dep, len(homes)))
            for direction in DIRECTIONS:
                for index in range(cfg.runs):
                    _measure(dep, result, homes, direction, cfg.seconds)
                    print(
                        f"    {count} session(s), {direction}: run {index + 1}/{cfg.runs}: "
                        f"{result.metrics[_key('sum', count, direction)].samples[-1]:.1f} Mbit/s,"
                        f" {result.metrics[_key('per_core', count, direction)].samples[-1]:.2f}"
                        " Gbit/s per server core",
                        flush=True,
                    )
    finally:
        for name in list(dep.clients):
            dep.stop_client(name)
        dep.stop_server()
    result.notes.append(
        "unshaped links; every session bonds wan1+wan2 from its own client home; clients, "
        "iperf3 and the server share the machine's cores"
    )


def _start_client(dep: Deployment, index: int) -> str:
    name = f"{CLIENT_PREFIX}{index + 1}"
    netns = dep.t.client_ns if index == 0 else dep.bed.add_client_home()
    dep.issue(name)
    dep.start_client(name, netns=netns)
    return netns


def _measure(
    dep: Deployment, result: ScenarioResult, homes: list[str], direction: str, seconds: float
) -> None:
    assert dep.server is not None
    count = len(homes)
    before, started = cpu_seconds(dep.server.pid), time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        runs = list(
            pool.map(
                lambda i: _stream(dep, homes[i], FIRST_PORT + i, direction, seconds), range(count)
            )
        )
    server_s, wall_s = cpu_seconds(dep.server.pid) - before, time.monotonic() - started
    summed = sum(run.mbit_s for run in runs)
    gigabits = sum(run.mbit_s * run.seconds for run in runs) / 1000
    label = f"{count} session(s), {direction}"
    result.add(_key("sum", count, direction), f"{label}: summed goodput", "Mbit/s", summed)
    result.add(
        _key("per_core", count, direction),
        f"{label}: server capacity per core",
        "Gbit/s",
        round(gigabits / server_s, 3) if server_s > 0 else 0.0,
    )
    result.add(
        _key("cores", count, direction),
        f"{label}: server cores used",
        "cores",
        round(server_s / wall_s, 2),
    )


def _stream(dep: Deployment, netns: str, port: int, direction: str, seconds: float) -> IperfResult:
    return iperf(
        dep.bed,
        client_ns=netns,
        server_ns=dep.t.internet_ns,
        target=str(dep.t.internet_host_v4.ip),
        seconds=seconds,
        reverse=direction == "download",
        port=port,
    )


def _key(quantity: str, count: int, direction: str) -> str:
    return f"{quantity}_{count}_{direction}"
