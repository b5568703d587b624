"""The throughput, latency and CPU scenarios of ``fluxify-bench lab``.

A scenario gets a fresh two-uplink deployment (``lab.deployment``), measures every quantity
``cfg.runs`` times into a :class:`ScenarioResult` and declares the ratios shown. Raw links and
the baselines are measured before Fluxify starts, so each sees an untouched client namespace.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from fluxify.lab.baselines import Tunnel, baseline_tunnel
from fluxify.lab.bench_measure import (
    DIRECTIONS,
    Throughput,
    cpu_per_gb,
    fluxify_running,
    ping_rtt_ms,
    single,
    tunneled,
)
from fluxify.lab.bench_report import Ratio, ScenarioResult
from fluxify.lab.deployment import Deployment
from fluxify.protocol.addresses import SERVER_TUN_V4

MBIT = "Mbit/s"
FLUXIFY_SERVER = "fluxify_server"  # the latency scenario's key: Fluxify to its server's address
ADDED_LABELS = {
    FLUXIFY_SERVER: "fluxify (to the server tunnel address)",
    "fluxify": "fluxify (to the internet host)",
}


@dataclass(frozen=True)
class BenchConfig:
    """How the suite runs: runs per quantity, iperf3 seconds, baselines available here."""

    runs: int
    seconds: float
    workdir: Path
    baselines: tuple[str, ...] = ()


Scenario = Callable[[Deployment, BenchConfig, ScenarioResult], None]


def repeat(
    result: ScenarioResult,
    key: str,
    label: str,
    runs: int,
    measure: Callable[[], float],
    *,
    unit: str = MBIT,
) -> None:
    """Measure ``runs`` samples of metric ``key``, printing each as progress."""
    for index in range(runs):
        value = measure()
        result.add(key, label, unit, value)
        print(f"    {label}: run {index + 1}/{runs}: {value:.2f} {unit}", flush=True)


def raw_mbit(dep: Deployment, number: int, seconds: float, direction: str) -> float:
    return single(dep, number, seconds, direction).mbit_s


def tunnel_mbit(dep: Deployment, seconds: float, direction: str, via: Tunnel | None) -> float:
    """Goodput through baseline ``via`` (to the server's tunnel address) or Fluxify (None)."""
    return tunneled_via(dep, seconds, via, direction).mbit_s


def single_path(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
    """Scenario 1: unshaped links; raw wan1, each baseline over wan1, Fluxify over both."""
    for d in DIRECTIONS:
        measure = partial(raw_mbit, dep, 1, cfg.seconds, d)
        repeat(result, f"raw_{d}", f"raw link wan1, {d}", cfg.runs, measure)
    for name in cfg.baselines:
        with baseline_tunnel(name, dep) as tunnel:
            for d in DIRECTIONS:
                measure = partial(tunnel_mbit, dep, cfg.seconds, d, tunnel)
                repeat(result, f"{name}_{d}", f"{name} over wan1, {d}", cfg.runs, measure)
    fluxify_bonded_or_one(dep, cfg, result)
    result.ratios.extend(single_ratios(cfg.baselines))
    result.notes.append(
        "fluxify-client -b needs 2 uplinks: its row bonds wan1+wan2, both unshaped; its "
        "one-uplink row marks wan2 -backup (data on wan1 while it lives); "
        "baselines end at the server's tunnel address, fluxify at the internet host behind it"
    )


FLUXIFY_ONE = "fluxify_one"  # Fluxify over wan1 alone (wan2 -backup)
BONDED_OR_ONE = (
    ("fluxify", "fluxify (2 unshaped uplinks)", "bonded"),
    (FLUXIFY_ONE, "fluxify over wan1 alone (wan2 backup)", "in the one-uplink rows"),
)


def fluxify_bonded_or_one(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
    """Fluxify over both unshaped uplinks and over wan1 alone (wan2 ``-backup``), the two taking
    turns run by run: each turn starts server and client afresh, so both rows see the same
    stretch of a shared box's load. (One after the other, three bonded runs then three single
    ones, the ratio read whatever load came or went between the blocks: on this 2-core VM one
    download moved 523 or 1 059 Mbit/s from run to run while other work ran.)"""
    moved = {key: {d: [0, 0] for d in DIRECTIONS} for key, _, _ in BONDED_OR_ONE}
    for index in range(cfg.runs):
        for key, label, _ in BONDED_OR_ONE:
            backup = dep.t.uplink(2).ifname if key == FLUXIFY_ONE else ""
            with fluxify_running(dep, backup=backup):
                for d in DIRECTIONS:
                    before = [_link_bytes(dep, n) for n in (1, 2)]
                    value = tunnel_mbit(dep, cfg.seconds, d, None)
                    for n, b in zip((1, 2), before, strict=True):
                        moved[key][d][n - 1] += _link_bytes(dep, n) - b
                    result.add(f"{key}_{d}", f"{label}, {d}", MBIT, value)
                    print(
                        f"    {label}, {d}: run {index + 1}/{cfg.runs}: {value:.2f} {MBIT}",
                        flush=True,
                    )
    for key, _, name in BONDED_OR_ONE:
        for d in DIRECTIONS:
            wan1, wan2 = moved[key][d]
            result.notes.append(
                f"{name} {d}: wan2 carried {100 * wan2 / max(1, wan1 + wan2):.2f} % "
                "of the bytes on wan1 + wan2"
            )


def single_ratios(baselines: tuple[str, ...]) -> list[Ratio]:
    """The single-path ratios per direction: Fluxify against the raw link, against itself over
    one uplink (bonding two unshaped uplinks must not be slower) and against each baseline."""
    ratios: list[Ratio] = []
    for d in DIRECTIONS:
        ratios.append(Ratio(f"fluxify / raw link, {d}", f"fluxify_{d}", f"raw_{d}"))
        ratios.append(
            Ratio(f"fluxify bonded 2 uplinks / 1 uplink, {d}", f"fluxify_{d}", f"fluxify_one_{d}")
        )
        for name in baselines:
            ratios.append(Ratio(f"fluxify / {name}, {d}", f"fluxify_{d}", f"{name}_{d}"))
            ratios.append(Ratio(f"{name} / raw link, {d}", f"{name}_{d}", f"raw_{d}"))
    return ratios


def _link_bytes(dep: Deployment, number: int) -> int:
    counters = dep.bed.counters(dep.t.client_ns, dep.t.uplink(number).ifname)
    return counters.rx_bytes + counters.tx_bytes


# One flow through the tunnel carries at most 1348 of 1492 wire bytes per packet, against
# 1448 of 1514 raw: 94.5 % of the raw links' sum is the ceiling (a 1400-byte inner MTU).
TUNNEL_CEILING = (1348 / 1492) / (1448 / 1514)


def bonding(
    links: tuple[tuple[float, float], ...], loss_percent: tuple[int, ...] = (), *, v1: bool = True
) -> Scenario:
    """Uplinks of (Mbit/s, one-way delay ms), optionally lossy: each alone, the sum, bonded
    (bond-v2) and, with ``v1``, bonded by the original round robin for comparison."""

    def run(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
        for number, (rate, delay_ms) in enumerate(links, start=1):
            dep.bed.shape_uplink(number, rate)
            if delay_ms:
                dep.bed.set_delay(number, delay_ms)
        for number, percent in enumerate(loss_percent, start=1):
            if percent:
                uplink = dep.t.uplink(number)
                ifnames = [uplink.isp_lan_ifname, uplink.isp_wan_ifname]
                dep.bed.set_loss(uplink.isp_ns, ifnames, percent)
        for d in DIRECTIONS:
            for number, (rate, delay_ms) in enumerate(links, start=1):
                lossy = loss_percent[number - 1] if number <= len(loss_percent) else 0
                extra = f", {lossy} % loss" if lossy else ""
                label = f"wan{number} alone ({rate:g} Mbit/s, {delay_ms:g} ms{extra}), {d}"
                measure = partial(raw_mbit, dep, number, cfg.seconds, d)
                repeat(result, f"wan{number}_{d}", label, cfg.runs, measure)
            samples = [result.metrics[f"wan{n}_{d}"].samples for n in range(1, len(links) + 1)]
            sum_metric = result.metric(f"sum_{d}", f"sum of single links, {d}", MBIT)
            sum_metric.samples = [round(sum(each), 2) for each in zip(*samples, strict=True)]
            best = result.metric(f"best_{d}", f"best single link, {d}", MBIT)
            best.samples = [round(max(each), 2) for each in zip(*samples, strict=True)]
            ceiling = result.metric(f"ceiling_{d}", f"tunnel ceiling (94.5 % of sum), {d}", MBIT)
            ceiling.samples = [round(s * TUNNEL_CEILING, 2) for s in sum_metric.samples]
        variants = [("bonded", "v2", "bonded (fluxify)")]
        if v1:
            variants.append(("v1", "v1", "bonded (fluxify -protocol v1, round robin)"))
        for key, protocol, title in variants:
            with fluxify_running(dep, protocol):
                for d in DIRECTIONS:
                    measure = partial(tunnel_mbit, dep, cfg.seconds, d, None)
                    repeat(result, f"{key}_{d}", f"{title}, {d}", cfg.runs, measure)
        for d in DIRECTIONS:
            for key, _protocol, _title in variants:
                name = "bonded" if key == "bonded" else "v1 round robin"
                result.ratios.append(Ratio(f"{name} / sum, {d}", f"{key}_{d}", f"sum_{d}"))
                result.ratios.append(Ratio(f"{name} / ceiling, {d}", f"{key}_{d}", f"ceiling_{d}"))
                result.ratios.append(
                    Ratio(f"{name} / best single link, {d}", f"{key}_{d}", f"best_{d}")
                )

    return run


def latency(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
    """Scenario 6: ping RTT raw over wan1 to the server, through each tunnel to the server's
    tunnel address, through Fluxify to its server's tunnel address and to the internet host."""
    wan1 = dep.t.uplink(1).ifname
    measure = partial(ping_rtt_ms, dep, str(dep.t.server_v4.ip), interface=wan1)
    repeat(result, "raw", "raw ping wan1 -> server", cfg.runs, measure, unit="ms")
    for name in cfg.baselines:
        with baseline_tunnel(name, dep) as tunnel:
            measure = partial(ping_rtt_ms, dep, tunnel.target)
            label = f"{name} ping -> server tunnel address"
            repeat(result, name, label, cfg.runs, measure, unit="ms")
    with fluxify_running(dep):
        measure = partial(ping_rtt_ms, dep, str(SERVER_TUN_V4))
        label = "fluxify ping -> server tunnel address"
        repeat(result, FLUXIFY_SERVER, label, cfg.runs, measure, unit="ms")
        measure = partial(ping_rtt_ms, dep, str(dep.t.internet_host_v4.ip))
        repeat(result, "fluxify", "fluxify ping -> internet host", cfg.runs, measure, unit="ms")
    added_latency(result, cfg.baselines)
    result.notes.append(
        "RTT = average of 20 pings 0.2 s apart, unloaded; median of the runs' averages; added = "
        "tunnel RTT - raw RTT of the same run; the internet host is one more hop behind the server"
    )


def added_latency(result: ScenarioResult, baselines: tuple[str, ...]) -> None:
    """From the RTT metrics (ms): each tunnel's RTT added to the raw one, per run, in µs; the
    ratios of RTTs, and of Fluxify's added RTT (to the server, as the baselines) to theirs."""
    raw = result.metrics["raw"].samples
    for key in (FLUXIFY_SERVER, "fluxify", *baselines):
        if key not in result.metrics:
            continue
        tunnel_rtt = result.metrics[key].samples
        added = [round((t - r) * 1000, 1) for t, r in zip(tunnel_rtt, raw, strict=True)]
        label = f"RTT added by {ADDED_LABELS.get(key, key)}"
        result.metric(f"{key}_added", label, "us").samples = added
        result.ratios.append(Ratio(f"{key} RTT / raw RTT", key, "raw"))
    for name in baselines:
        label = f"fluxify added / {name} added (to the server)"
        result.ratios.append(Ratio(label, f"{FLUXIFY_SERVER}_added", f"{name}_added"))


def cpu(shaped_mbit: float = 0.0) -> Scenario:
    """Scenario 7: CPU seconds (user + system) per GB moved, client and server process; on the
    unshaped links (CPU-bound: packets come in large batches) or with both uplinks shaped to
    ``shaped_mbit`` (the links bound: a tunnel wakes for a few packets at a time, and what a
    wake-up costs counts). Shaped, Fluxify also runs over wan1 alone (wan2 ``-backup``): the
    baselines' link at the baselines' rate."""

    def run(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
        if shaped_mbit:
            for uplink in dep.t.uplinks:
                dep.bed.shape_uplink(uplink.number, shaped_mbit)
        for name in cfg.baselines:
            with baseline_tunnel(name, dep) as tunnel:
                pids = (tunnel.client_pid, tunnel.server_pid)
                measure = partial(tunneled_via, dep, cfg.seconds, tunnel)
                _cpu_runs(result, name, cfg, pids, measure)
        rows = ["fluxify"]
        with fluxify_running(dep) as pids:
            _cpu_runs(result, "fluxify", cfg, pids, partial(tunneled_via, dep, cfg.seconds, None))
        if shaped_mbit:
            rows.append(FLUXIFY_ONE)
            with fluxify_running(dep, backup=dep.t.uplink(2).ifname) as pids:
                measure = partial(tunneled_via, dep, cfg.seconds, None)
                _cpu_runs(result, FLUXIFY_ONE, cfg, pids, measure)
        for d in DIRECTIONS:
            for row in rows:
                for name in cfg.baselines:
                    for side in ("client", "server"):
                        result.ratios.append(
                            Ratio(
                                f"{row} / {name} {side} CPU per GB, {d}",
                                f"{row}_{side}_{d}",
                                f"{name}_{side}_{d}",
                            )
                        )
        links = f"both uplinks shaped to {shaped_mbit:g} Mbit/s" if shaped_mbit else "unshaped"
        one = f"; {FLUXIFY_ONE}: fluxify over wan1 alone (wan2 -backup)" if shaped_mbit else ""
        result.notes.append(f"{links}; fluxify bonds wan1+wan2, baselines use wan1{one}")

    return run


def _cpu_runs(
    result: ScenarioResult,
    name: str,
    cfg: BenchConfig,
    pids: tuple[int, int],
    measure: Callable[[str], Throughput],
) -> None:
    for d in DIRECTIONS:
        for index in range(cfg.runs):
            (client_s, server_s), moved = cpu_per_gb(pids, partial(measure, d))
            result.add(f"{name}_client_{d}", f"{name} client CPU per GB, {d}", "s/GB", client_s)
            result.add(f"{name}_server_{d}", f"{name} server CPU per GB, {d}", "s/GB", server_s)
            result.add(f"{name}_rate_{d}", f"{name} moved, {d}", "Mbit/s", moved.mbit_s)
            print(
                f"    {name} CPU per GB, {d}: run {index + 1}/{cfg.runs}: "
                f"client {client_s:.2f} s, server {server_s:.2f} s at {moved.mbit_s:.1f} Mbit/s",
                flush=True,
            )


def tunneled_via(dep: Deployment, seconds: float, via: Tunnel | None, direction: str) -> Throughput:
    """One run through baseline ``via`` (to the server's tunnel address) or Fluxify (None)."""
    if via is None:
        return tunneled(dep, seconds, direction)
    return tunneled(dep, seconds, direction, server_ns=dep.t.server_ns, target=via.target)
