"""``fluxify-bench lab``: the benchmark suite in the namespace lab, as table, JSON and PNG.

Scenarios (each quantity the median of ``runs`` runs, each run a fresh two-uplink deployment):

- ``single``: unshaped links; raw wan1, OpenVPN and wireguard-go over wan1, Fluxify bonding
  both uplinks and over wan1 alone;
- ``small``: 200-byte UDP datagrams, packets/s received and loss, raw and through each tunnel
  (``lab.bench_small``);
- ``bond-2x50``, ``bond-80-20``: shaped uplinks alone, their sum, bonded, efficiency;
- ``delay-10-40``, ``demo-10-30``, ``delay-10-100``: links of different one-way delay (the
  delay emulator); ``lossy``: one of two links loses 1 %; each bonded scenario also measures
  the v1 round robin (``-protocol v1``) beside bond-v2;
- ``failover``: wan1 cut at t = 5 s of a checked upload; longest gap of a 10 ms probe stream;
- ``latency``: ping RTT through each tunnel vs raw, and the RTT each adds (µs);
- ``cpu``: CPU seconds per GB of the client and server processes; ``cpu-2x50`` the same with
  both uplinks shaped to 50 Mbit/s (and Fluxify over wan1 alone beside the baselines);
- ``flood``: upload goodput while another address floods the server's UDP port with garbage,
  bad-tag and replayed control datagrams, against the same upload unflooded (``lab.bench_flood``);
- ``integrity``: 1 GB checked TCP transfers through Fluxify with offloads on, up and down, IPv4
  and IPv6, sha256 at both ends, no checksum error counted by any namespace
  (``lab.bench_integrity``); a failed check makes the suite exit 1;
- ``capacity``: 1, 2 and 3 bonding clients at once; summed goodput and the server's capacity
  per core (``lab.bench_capacity``, ``docs/multicore.md``).

Everything built is torn down after each scenario, on Ctrl-C and on SIGTERM. A failing scenario
is reported as such and the suite goes on.
"""

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fluxify.errors import FluxifyError
from fluxify.lab.baselines import ensure_installed
from fluxify.lab.bench_capacity import capacity
from fluxify.lab.bench_failover import failover
from fluxify.lab.bench_flood import flood_scenario
from fluxify.lab.bench_integrity import integrity
from fluxify.lab.bench_report import ScenarioResult, render_table, to_json, write_json, write_png
from fluxify.lab.bench_scenarios import BenchConfig, Scenario, bonding, cpu, latency, single_path
from fluxify.lab.bench_small import small_packets
from fluxify.lab.deployment import deployment
from fluxify.lab.interrupt import sigterm_as_interrupt

SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "single": ("single path, unshaped: raw vs Fluxify, OpenVPN, wireguard-go", single_path),
    "small": ("200-byte UDP datagrams: packets/s through each tunnel", small_packets),
    "bond-2x50": ("bonding 2 x 50 Mbit/s", bonding(((50, 0), (50, 0)))),
    "bond-80-20": ("bonding 80 + 20 Mbit/s", bonding(((80, 0), (20, 0)))),
    "delay-10-40": (
        "bonding 2 x 50 Mbit/s, 10 ms vs 40 ms one-way delay",
        bonding(((50, 10), (50, 40))),
    ),
    "demo-10-30": (
        "bonding 50 Mbit/s @ 10 ms + 30 Mbit/s @ 30 ms (the demo's links)",
        bonding(((50, 10), (30, 30))),
    ),
    "delay-10-100": (
        "bonding 2 x 50 Mbit/s, 10 ms vs 100 ms one-way delay",
        bonding(((50, 10), (50, 100))),
    ),
    "lossy": (
        "bonding 2 x 50 Mbit/s @ 10 ms, wan2 loses 1 %",
        bonding(((50, 10), (50, 10)), (0, 1)),
    ),
    "failover": ("failover: wan1 cut at t = 5 s of a bonded upload", failover),
    "latency": ("latency added by the tunnel (ping RTT)", latency),
    "cpu": ("CPU seconds per GB moved", cpu()),
    "cpu-2x50": ("CPU seconds per GB moved, both uplinks shaped to 50 Mbit/s", cpu(50.0)),
    "flood": ("upload while another address floods the server's UDP port", flood_scenario),
    "integrity": (
        "1 GB checked TCP transfers, offloads on: sha256 and checksum errors",
        integrity(),
    ),
    "capacity": ("1-3 sessions at once: summed goodput, server capacity per core", capacity),
}
BED_PREFIX = "fxbench"


def run_lab_bench(
    out: Path,
    *,
    scenarios: Sequence[str] = tuple(SCENARIOS),
    runs: int = 3,
    seconds: float = 6.0,
    baselines: bool = True,
    install: bool = True,
) -> int:
    """Run ``scenarios`` in order; print the table, write ``out``.json and ``out``.png."""
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise FluxifyError(
            f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )
    available, notes = ensure_installed(install=install) if baselines else ([], [])
    results: list[ScenarioResult] = []
    started = time.monotonic()
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="fluxify-bench-") as tmp:
        for step, name in enumerate(scenarios, start=1):
            title, scenario = SCENARIOS[name]
            print(f"[{step}/{len(scenarios)}] {name}: {title} ...", flush=True)
            cfg = BenchConfig(runs, seconds, Path(tmp) / name, tuple(available))
            results.append(_run_one(name, title, scenario, cfg))
    if results:
        results[0].notes.extend(notes)
    print(render_table(results))
    document = to_json(results, runs=runs, seconds=seconds)
    document["elapsed_s"] = round(time.monotonic() - started, 1)
    write_json(document, out.with_suffix(".json"))
    print(f"\nwrote {out.with_suffix('.json')}")
    if write_png(results, out.with_suffix(".png")):
        print(f"wrote {out.with_suffix('.png')}")
    else:
        print("matplotlib is not installed: no PNG written")
    return 0 if all(r.skipped is None and not r.failures for r in results) else 1


def _run_one(name: str, title: str, scenario: Scenario, cfg: BenchConfig) -> ScenarioResult:
    result = ScenarioResult(name, title)
    cfg.workdir.mkdir(parents=True)
    try:
        with deployment(cfg.workdir, uplinks=2, prefix=BED_PREFIX) as dep:
            scenario(dep, cfg, result)
    except (FluxifyError, OSError, AssertionError, KeyError, ValueError) as exc:
        result.skipped = f"failed: {type(exc).__name__}: {exc}"
        print(f"    {name} failed: {exc}", flush=True)
    return result
