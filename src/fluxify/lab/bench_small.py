"""The ``small`` scenario of ``fluxify-bench lab``: 200-byte UDP datagrams, as fast as iperf3
sends them, raw over wan1, through each baseline over wan1 and through Fluxify (both uplinks).

What counts is the packet rate a tunnel carries, not its bytes: each run reports the datagrams
per second the far end received and the share lost, upload and download. Every tunnel gets the
same offered load; the box's two cores are shared by the sender, the tunnel's two ends and the
receiver, so a tunnel that costs less per packet leaves the sender more.
"""

from collections.abc import Callable
from functools import partial

from fluxify.lab.baselines import OPENVPN, baseline_tunnel
from fluxify.lab.bench_measure import DIRECTIONS, fluxify_running
from fluxify.lab.bench_report import Ratio, ScenarioResult
from fluxify.lab.bench_scenarios import BenchConfig
from fluxify.lab.deployment import Deployment
from fluxify.lab.iperf import UdpResult, iperf_udp

DATAGRAM_BYTES = 200  # UDP payload of each datagram (the inner IP packet is 228 bytes)
OFFERED_RATE = "0"  # iperf3 -b: 0 is as fast as the sender can
PPS = "packets/s"
RAW = "raw"
FLUXIFY = "fluxify"


def small_udp(
    dep: Deployment,
    seconds: float,
    direction: str,
    *,
    server_ns: str,
    target: str,
    bind_dev: str | None = None,
) -> UdpResult:
    """One run of small datagrams from the client namespace to ``target`` (or back)."""
    return iperf_udp(
        dep.bed,
        client_ns=dep.t.client_ns,
        server_ns=server_ns,
        target=target,
        seconds=seconds,
        length=DATAGRAM_BYTES,
        rate=OFFERED_RATE,
        bind_dev=bind_dev,
        reverse=direction == "download",
    )


def record(result: ScenarioResult, key: str, label: str, direction: str, run: UdpResult) -> None:
    """One run's received packets/s and loss of ``key`` (e.g. "openvpn") in ``direction``."""
    result.add(f"{key}_{direction}", f"{label}, {direction}", PPS, run.packets_s)
    result.add(f"{key}_{direction}_loss", f"{label}, {direction}, lost", "%", run.loss_percent)


def small_ratios(baselines: tuple[str, ...]) -> list[Ratio]:
    """Fluxify's received packets/s against each baseline's and the raw link's, per direction;
    each baseline's against the raw link's. OpenVPN first: the comparison the issue asks for."""
    ordered = sorted(baselines, key=lambda name: name != OPENVPN)
    ratios: list[Ratio] = []
    for d in DIRECTIONS:
        for name in ordered:
            ratios.append(
                Ratio(f"fluxify / {name} packets/s, {d}", f"{FLUXIFY}_{d}", f"{name}_{d}")
            )
        ratios.append(Ratio(f"fluxify / raw link packets/s, {d}", f"{FLUXIFY}_{d}", f"{RAW}_{d}"))
        for name in ordered:
            ratios.append(Ratio(f"{name} / raw link packets/s, {d}", f"{name}_{d}", f"{RAW}_{d}"))
    return ratios


def small_packets(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
    """The scenario: raw wan1, each baseline over wan1, Fluxify; ``cfg.runs`` runs each way."""
    t = dep.t
    raw = partial(
        small_udp,
        server_ns=t.server_ns,
        target=str(t.server_v4.ip),
        bind_dev=t.uplink(1).ifname,
    )
    _runs(result, cfg, RAW, "raw link wan1", partial(raw, dep, cfg.seconds))
    for name in cfg.baselines:
        with baseline_tunnel(name, dep) as tunnel:
            via = partial(small_udp, dep, cfg.seconds, server_ns=t.server_ns, target=tunnel.target)
            _runs(result, cfg, name, f"{name} over wan1", via)
    with fluxify_running(dep):
        through = partial(
            small_udp, dep, cfg.seconds, server_ns=t.internet_ns, target=str(t.internet_host_v4.ip)
        )
        _runs(result, cfg, FLUXIFY, "fluxify (2 unshaped uplinks)", through)
    result.ratios.extend(small_ratios(cfg.baselines))
    result.notes.append(
        f"iperf3 -u -l {DATAGRAM_BYTES} -b {OFFERED_RATE} (as fast as it sends); packets/s as "
        "received at the far end; baselines end at the server's tunnel address, fluxify at the "
        "internet host behind it"
    )


def _runs(
    result: ScenarioResult,
    cfg: BenchConfig,
    key: str,
    label: str,
    measure: Callable[[str], UdpResult],
) -> None:
    for d in DIRECTIONS:
        for index in range(cfg.runs):
            run = measure(d)
            record(result, key, label, d, run)
            print(
                f"    {label}, {d}: run {index + 1}/{cfg.runs}: {run.packets_s:.0f} packets/s, "
                f"{run.loss_percent:.1f} % lost",
                flush=True,
            )
