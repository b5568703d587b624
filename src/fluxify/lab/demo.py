"""The two-WAN demo: shape two uplinks, measure each alone, then bonded through Fluxify.

Builds a namespace lab (two uplinks behind NATing ISP routers, a server, an internet host),
measures one TCP stream over each uplink alone and through the tunnel, both directions, prints a
table with efficiency = bonded ÷ sum of the single links, and writes JSON and a PNG. Everything
it built is torn down at the end, on Ctrl-C and on SIGTERM too.
"""

import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fluxify.lab.deployment import Deployment, deployment, wait_until
from fluxify.lab.interrupt import sigterm_as_interrupt
from fluxify.lab.iperf import iperf

DIRECTIONS = ("upload", "download")


@dataclass(frozen=True)
class LinkSpec:
    """One emulated uplink: rate (tbf, both directions) and one-way delay each way."""

    rate_mbit: float
    delay_ms: float = 0.0

    def __str__(self) -> str:
        delay = f" / {self.delay_ms:g} ms" if self.delay_ms else ""
        return f"{self.rate_mbit:g} Mbit/s{delay}"


DEMO_LINKS = (LinkSpec(50, 10), LinkSpec(30, 30))


@dataclass
class DemoResult:
    links: list[str]
    seconds: float
    single_mbit: dict[str, list[float]] = field(default_factory=dict)  # direction -> per link
    bonded_mbit: dict[str, float] = field(default_factory=dict)
    efficiency: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_demo(out: Path, *, seconds: float = 8.0, links: Sequence[LinkSpec] = DEMO_LINKS) -> int:
    result = DemoResult(links=[str(link) for link in links], seconds=seconds)
    steps = 3 + len(links)
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="fluxify-demo-") as tmp:
        _progress(1, steps, f"building the lab: {len(links)} uplinks ({', '.join(result.links)})")
        with deployment(Path(tmp), uplinks=len(links), prefix="fxdemo") as dep:
            _shape(dep, links)
            for number, link in enumerate(links, start=1):
                _progress(1 + number, steps, f"measuring uplink {number} alone ({link})")
                for direction in DIRECTIONS:
                    mbit = _single(dep, number, seconds, reverse=direction == "download")
                    result.single_mbit.setdefault(direction, []).append(mbit)
            _progress(steps - 1, steps, "starting fluxify-server and a bonding fluxify-client")
            dep.issue("demo")
            dep.start_server()
            dep.start_client("demo", ifaces=",".join(u.ifname for u in dep.t.uplinks))
            wait_until("the tunnel to carry a ping", dep.ping_internet)
            _progress(steps, steps, "measuring through the bonded tunnel")
            for direction in DIRECTIONS:
                result.bonded_mbit[direction] = _bonded(dep, seconds, direction == "download")
    for direction in DIRECTIONS:
        total = sum(result.single_mbit[direction])
        result.efficiency[direction] = round(result.bonded_mbit[direction] / total, 3)
    _print_table(result)
    _write(result, out)
    return 0


def _shape(dep: Deployment, links: Sequence[LinkSpec]) -> None:
    for number, link in enumerate(links, start=1):
        dep.bed.shape_uplink(number, link.rate_mbit)
        if link.delay_ms:
            dep.bed.set_delay(number, link.delay_ms)


def _single(dep: Deployment, number: int, seconds: float, *, reverse: bool) -> float:
    uplink = dep.t.uplink(number)
    return iperf(
        dep.bed,
        client_ns=dep.t.client_ns,
        server_ns=dep.t.server_ns,
        target=str(dep.t.server_v4.ip),
        seconds=seconds,
        bind_dev=uplink.ifname,
        reverse=reverse,
    ).mbit_s


def _bonded(dep: Deployment, seconds: float, reverse: bool) -> float:
    return iperf(
        dep.bed,
        client_ns=dep.t.client_ns,
        server_ns=dep.t.internet_ns,
        target=str(dep.t.internet_host_v4.ip),
        seconds=seconds,
        reverse=reverse,
    ).mbit_s


def _progress(step: int, steps: int, text: str) -> None:
    print(f"[{step}/{steps}] {text} ...", flush=True)


def _print_table(result: DemoResult) -> None:
    print()
    print(f"{'path':<28}{'upload Mbit/s':>16}{'download Mbit/s':>18}")
    for index, link in enumerate(result.links):
        up = result.single_mbit["upload"][index]
        down = result.single_mbit["download"][index]
        print(f"{'uplink ' + str(index + 1) + ' (' + link + ')':<28}{up:>16.1f}{down:>18.1f}")
    sums = {d: sum(result.single_mbit[d]) for d in DIRECTIONS}
    print(f"{'sum of single links':<28}{sums['upload']:>16.1f}{sums['download']:>18.1f}")
    bonded = result.bonded_mbit
    print(f"{'bonded (fluxify)':<28}{bonded['upload']:>16.1f}{bonded['download']:>18.1f}")
    eff = result.efficiency
    print(f"{'efficiency (bonded / sum)':<28}{eff['upload']:>16.0%}{eff['download']:>18.0%}")
    for note in result.notes:
        print(f"note: {note}")


def _write(result: DemoResult, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"\nwrote {json_path}")
    try:
        import matplotlib  # noqa: PLC0415 - optional, only for the picture

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib is not installed: no PNG written")
        return
    labels = [f"uplink {i + 1}\n{link}" for i, link in enumerate(result.links)]
    labels += ["sum of\nsingle links", "bonded\n(fluxify)"]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    width = 0.38
    for offset, direction in ((-width / 2, "upload"), (width / 2, "download")):
        singles = result.single_mbit[direction]
        values = [*singles, sum(singles), result.bonded_mbit[direction]]
        positions = [i + offset for i in range(len(values))]
        bars = ax.bar(positions, values, width, label=direction)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("TCP goodput, Mbit/s (one stream)")
    eff = result.efficiency
    ax.set_title(
        f"Fluxify two-WAN lab: efficiency {eff['upload']:.0%} up, {eff['download']:.0%} down"
    )
    ax.legend()
    fig.tight_layout()
    png_path = out.with_suffix(".png")
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    print(f"wrote {png_path}")
