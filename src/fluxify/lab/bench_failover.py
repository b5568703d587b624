"""Scenario 5 of ``fluxify-bench lab``: cut one uplink during a bonded transfer.

Both uplinks are shaped to 50 Mbit/s. A checked TCP transfer (``lab.transfer``: SHA-256 at both
ends) and a 10 ms UDP probe stream (``lab.bench_gap``) run through the tunnel; at t = 5 s uplink 1
loses its carrier. Reported: the longest delivery gap of the probe stream, datagrams lost,
whether the TCP transfer arrived intact, and its goodput. Uplink 1 is restored between runs.
"""

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from fluxify.errors import HostError
from fluxify.lab.bench_measure import fluxify_running, path_alive
from fluxify.lab.bench_report import ScenarioResult
from fluxify.lab.bench_scenarios import BenchConfig
from fluxify.lab.deployment import Deployment, wait_until

RATE_MBIT = 50.0
CUT_AT_S = 5.0
PROBE_INTERVAL_MS = 10.0
PROBE_COUNT = 1000  # 10 s of probes: the cut and 5 s after it
PROBE_PORT = 5401
TRANSFER_BYTES = 80_000_000  # ~5 s bonded at ~90 Mbit/s before the cut, ~4 s on one path after
RECOVER_TIMEOUT_S = 30.0
GAP_MODULE = [sys.executable, "-m", "fluxify.lab.bench_gap"]


def failover(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
    for number in (1, 2):
        dep.bed.shape_uplink(number, RATE_MBIT)
    with fluxify_running(dep):
        for index in range(cfg.runs):
            wait_until("both paths alive", lambda: _both_alive(dep), RECOVER_TIMEOUT_S)
            run = _one_run(dep)
            dep.bed.set_uplink(1, up=True)
            result.add("gap", "longest delivery gap (10 ms UDP probes)", "ms", run["gap_ms"])
            result.add("lost", "probe datagrams lost (of 1000)", "datagrams", run["lost"])
            result.add("survived", "TCP transfer intact (1 = yes)", "bool", run["survived"])
            result.add("tcp_mbit", "TCP goodput across the cut", "Mbit/s", run["mbit_s"])
            print(
                f"    failover run {index + 1}/{cfg.runs}: gap {run['gap_ms']:.0f} ms, "
                f"lost {run['lost']:.0f}, TCP intact {bool(run['survived'])}",
                flush=True,
            )
    result.notes.append(
        f"2 x {RATE_MBIT:g} Mbit/s; wan1 loses carrier at t = {CUT_AT_S:g} s of an "
        f"{TRANSFER_BYTES // 1_000_000} MB checked upload; probes 10 ms apart to the internet host"
    )


def _both_alive(dep: Deployment) -> bool:
    return path_alive(dep, "wan1") and path_alive(dep, "wan2")


def _one_run(dep: Deployment) -> dict[str, float]:
    receiver = dep.bed.spawn(
        dep.t.internet_ns,
        [*GAP_MODULE, "receive", "--port", str(PROBE_PORT), "--count", str(PROBE_COUNT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None
    if "listening" not in receiver.stdout.readline():
        raise HostError("the probe receiver did not start")
    senders: list[subprocess.Popen[str]] = []

    def cut_during_transfer() -> None:
        senders.append(_start_probes(dep))
        time.sleep(CUT_AT_S)
        dep.bed.set_uplink(1, up=False)

    survived, mbit_s = _checked_transfer(dep, cut_during_transfer)
    for sender in senders:
        sender.communicate(timeout=30)
    out, _ = receiver.communicate(timeout=40)
    probes: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    gap = probes["max_gap_ms"]
    return {
        "gap_ms": float(gap) if gap is not None else PROBE_COUNT * PROBE_INTERVAL_MS,
        "lost": float(probes["lost"]),
        "survived": 1.0 if survived else 0.0,
        "mbit_s": mbit_s,
    }


def _start_probes(dep: Deployment) -> "subprocess.Popen[str]":
    argv = [*GAP_MODULE, "send", "--host", str(dep.t.internet_host_v4.ip)]
    argv += ["--port", str(PROBE_PORT), "--count", str(PROBE_COUNT)]
    argv += ["--interval-ms", f"{PROBE_INTERVAL_MS:g}"]
    return dep.bed.spawn(dep.t.client_ns, argv, stdout=subprocess.PIPE, text=True)


def _checked_transfer(dep: Deployment, during: Callable[[], None]) -> tuple[bool, float]:
    """Whether the upload arrived whole with the same SHA-256, and its goodput (Mbit/s)."""
    try:
        sent, received = dep.transfer(TRANSFER_BYTES, during=during)
    except (HostError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
        print(f"    the TCP transfer failed: {exc}", flush=True)
        return False, 0.0
    intact = received.get("bytes") == sent.get("bytes") == TRANSFER_BYTES and received.get(
        "sha256"
    ) == sent.get("sha256")
    seconds = float(sent.get("seconds") or 0.0)
    mbit_s = round(TRANSFER_BYTES * 8 / seconds / 1e6, 2) if seconds > 0 else 0.0
    return intact, mbit_s
