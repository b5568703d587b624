"""``fluxify-lab soak``: long mixed traffic through a bonded lab while one uplink flaps.

A two-uplink deployment (``lab.deployment``) carries TCP bulk both ways (iperf3, alternating
upload and download, rate-capped so the box stays responsive), pings and a stream of small UDP
datagrams (``lab.bench_gap``) for ``minutes``; wan2 loses its carrier for ``FLAP_DOWN_S`` every
``flap_s``. Every ``sample_s`` the server's and the client's RSS and open file descriptors and
the session/path state are sampled. Both ends rotate their keys every ``rekey_s`` (the
``rekey`` channel), so a long soak also crosses many rekeys under load. Prints a summary,
writes JSON, and fails (exit 1) when the RSS or fd count grew beyond a bound between the
second and the last quarter of the run, the session got stuck (the tunnel carried no ping for
``STUCK_SAMPLES`` samples in a row, or no session at the server), or the keys stopped rotating.
"""

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fluxify.errors import HostError
from fluxify.lab.deployment import Deployment, deployment, wait_until
from fluxify.lab.interrupt import sigterm_as_interrupt
from fluxify.lab.iperf import iperf

SOAK_CLIENT = "soak"
BED_PREFIX = "fxfsoak"
FLAP_DOWN_S = 10.0
BULK_SECONDS = 20.0  # one iperf3 run; directions alternate
BULK_RATE = "40M"  # per run: steady load, without starving the processes being watched
PROBE_INTERVAL_MS = 20.0
PROBE_PORT = 5402
BULK_PORT = 5212
STUCK_SAMPLES = 4
RSS_GROWTH_MAX_KB = 20_000  # beyond what the first quarter's median already held
RSS_GROWTH_MAX_RATIO = 0.25
FD_GROWTH_MAX = 8
GAP_MODULE = [sys.executable, "-m", "fluxify.lab.bench_gap"]
REKEY_S = 300.0  # 12 rekeys an hour (the product's default is 1 h)


@dataclass(frozen=True)
class Sample:
    at_s: float
    server_rss_kb: int
    server_fds: int
    client_rss_kb: int
    client_fds: int
    sessions: int
    server_paths: int
    client_paths_alive: int
    wan2_up: bool
    tunnel_ping: bool
    rekeys: int = 0  # the server's count over its sessions (a new session counts from 0)


@dataclass
class SoakResult:
    minutes: float
    samples: list[Sample] = field(default_factory=list)
    bulk_runs: int = 0
    bulk_failed: int = 0
    bulk_errors: list[str] = field(default_factory=list)
    bulk_mbit: list[float] = field(default_factory=list)
    flaps: int = 0
    probes: dict[str, Any] = field(default_factory=dict)
    rekey_s: float = REKEY_S
    server_drops: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise HostError(f"no VmRSS for process {pid}")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def run_soak(
    minutes: float,
    out: Path,
    *,
    sample_s: float = 10.0,
    flap_s: float = 60.0,
    rekey_s: float = REKEY_S,
) -> int:
    """Soak for ``minutes``; print the summary, write ``out`` (JSON); 1 on growth, stuck or
    keys that did not rotate."""
    result = SoakResult(minutes, rekey_s=rekey_s)
    rekeying = ("-rekey-interval", f"{rekey_s:g}s")
    with (
        sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="fluxify-soak-") as tmp,
        deployment(Path(tmp), uplinks=2, prefix=BED_PREFIX) as dep,
    ):
        dep.issue(SOAK_CLIENT)
        dep.start_server(extra_args=rekeying)
        dep.start_client(SOAK_CLIENT, ifaces="wan1,wan2", extra_args=rekeying)
        wait_until("the tunnel to carry a ping", dep.ping_internet)
        _soak(dep, result, minutes * 60.0, sample_s, flap_s)
        result.server_drops = dep.server_stats().get("drops", {})
        result.failures += judge(result.samples, sample_s, rekey_s)
        server_log = dep.log("server.log")
    summary = summarize(result, server_log)
    print(summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(result), indent=1) + "\n")
    print(f"wrote {out}")
    return 1 if result.failures else 0


def _soak(
    dep: Deployment, result: SoakResult, seconds: float, sample_s: float, flap_s: float
) -> None:
    stop = threading.Event()
    count = int(seconds * 1000 / PROBE_INTERVAL_MS)
    probe_args = ["--port", str(PROBE_PORT), "--count", str(count)]
    probe_args += ["--interval-ms", f"{PROBE_INTERVAL_MS:g}"]
    receiver = dep.bed.spawn(
        dep.t.internet_ns,
        [*GAP_MODULE, "receive", *probe_args, "--seconds", f"{seconds + 60:g}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None
    if "listening" not in receiver.stdout.readline():
        raise HostError("the probe receiver did not start")
    probes = dep.bed.spawn(
        dep.t.client_ns,
        [*GAP_MODULE, "send", "--host", str(dep.t.internet_host_v4.ip), *probe_args],
        stdout=subprocess.DEVNULL,
    )
    assert dep.server is not None
    server_pid, client_pid = dep.server.pid, dep.clients[SOAK_CLIENT].pid
    started = time.monotonic()
    bulk = threading.Thread(target=_bulk_loop, args=(dep, result, stop, started), daemon=True)
    bulk.start()
    wan2_up, next_flap, next_sample = True, started + flap_s, started
    try:
        while (now := time.monotonic()) < started + seconds:
            if wan2_up and now >= next_flap:
                dep.bed.set_uplink(2, up=False)
                wan2_up, result.flaps = False, result.flaps + 1
            elif not wan2_up and now >= next_flap + FLAP_DOWN_S:
                dep.bed.set_uplink(2, up=True)
                wan2_up, next_flap = True, next_flap + flap_s
            if now >= next_sample:
                next_sample += sample_s
                result.samples.append(_sample(dep, server_pid, client_pid, now - started, wan2_up))
                _progress(result.samples[-1])
            time.sleep(0.2)
    finally:
        stop.set()
        if not wan2_up:
            dep.bed.set_uplink(2, up=True)
        bulk.join(timeout=BULK_SECONDS + 60)
    probes.wait(timeout=120)
    out, _ = receiver.communicate(timeout=120)
    lines = out.strip().splitlines()
    result.probes = json.loads(lines[-1]) if lines else {}


def _bulk_loop(dep: Deployment, result: SoakResult, stop: threading.Event, started: float) -> None:
    reverse = False
    while not stop.is_set():
        try:
            run = iperf(
                dep.bed,
                client_ns=dep.t.client_ns,
                server_ns=dep.t.internet_ns,
                target=str(dep.t.internet_host_v4.ip),
                seconds=BULK_SECONDS,
                reverse=reverse,
                port=BULK_PORT,
                rate=BULK_RATE,
            )
            result.bulk_mbit.append(round(run.mbit_s, 1))
        except (HostError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            result.bulk_failed += 1
            result.bulk_errors.append(f"t={time.monotonic() - started:.0f}s: {exc}"[:200])
            stop.wait(2.0)
        result.bulk_runs += 1
        reverse = not reverse


def _sample(
    dep: Deployment, server_pid: int, client_pid: int, at_s: float, wan2_up: bool
) -> Sample:
    try:
        server = dep.server_stats()
        client = dep.client_stats(SOAK_CLIENT)
    except HostError:
        server, client = {}, {}
    sessions = server.get("sessions", [])
    return Sample(
        at_s=round(at_s, 1),
        server_rss_kb=proc_rss_kb(server_pid),
        server_fds=proc_fds(server_pid),
        client_rss_kb=proc_rss_kb(client_pid),
        client_fds=proc_fds(client_pid),
        sessions=len(sessions),
        server_paths=sum(len(s.get("paths", [])) for s in sessions),
        client_paths_alive=sum(1 for p in client.get("paths", []) if p.get("alive")),
        wan2_up=wan2_up,
        tunnel_ping=dep.ping_internet(),
        rekeys=sum(int(s.get("rekeys", 0)) for s in sessions),
    )


def _progress(s: Sample) -> None:
    print(
        f"  t={s.at_s:7.1f} s  server {s.server_rss_kb / 1024:6.1f} MB {s.server_fds:3d} fds  "
        f"client {s.client_rss_kb / 1024:6.1f} MB {s.client_fds:3d} fds  sessions {s.sessions} "
        f"paths {s.server_paths}/{s.client_paths_alive} alive  wan2 {'up' if s.wan2_up else 'down'}"
        f"  ping {'ok' if s.tunnel_ping else 'LOST'}",
        flush=True,
    )


def judge(samples: list[Sample], sample_s: float, rekey_s: float | None = None) -> list[str]:
    """Growth between the second and the last quarter (medians), stuck sessions and (with
    ``rekey_s``) keys that rotated less often than asked, as sentences."""
    failures: list[str] = []
    if len(samples) < 8:
        return [f"only {len(samples)} samples: run longer than 8 x {sample_s:g} s"]
    quarter = len(samples) // 4
    # the first quarter is warm-up (buffers, the allocator's arenas fill at the first bulk run)
    first, last = samples[quarter : 2 * quarter], samples[-quarter:]
    for side in ("server", "client"):
        rss0 = statistics.median(getattr(s, f"{side}_rss_kb") for s in first)
        rss1 = statistics.median(getattr(s, f"{side}_rss_kb") for s in last)
        if rss1 - rss0 > max(RSS_GROWTH_MAX_KB, RSS_GROWTH_MAX_RATIO * rss0):
            failures.append(f"{side} RSS grew from {rss0 / 1024:.1f} to {rss1 / 1024:.1f} MB")
        fd0 = statistics.median(getattr(s, f"{side}_fds") for s in first)
        fd1 = max(getattr(s, f"{side}_fds") for s in last)
        if fd1 - fd0 > FD_GROWTH_MAX:
            failures.append(f"{side} open files grew from {fd0:.0f} to {fd1}")
    lost = 0
    for s in samples:
        lost = 0 if s.tunnel_ping and s.sessions else lost + 1
        if lost >= STUCK_SAMPLES:
            failures.append(f"stuck: no ping through the tunnel or no session at t = {s.at_s} s")
            break
    if rekey_s:
        span = samples[-1].at_s - samples[0].at_s
        expected = int(span // rekey_s) - 1  # one interval of slack: where the run started
        if (done := rekeys_seen(samples)) < expected:
            failures.append(
                f"keys rotated {done} times in {span / 60:.0f} min, every {rekey_s:g} s asked "
                f"(at least {expected} expected)"
            )
    return failures


def rekeys_seen(samples: list[Sample]) -> int:
    """Rekeys over the run: the server's count went up by these (a drop is a new session,
    counting again from 0)."""
    seen = 0
    for before, after in itertools.pairwise(samples):
        seen += after.rekeys - before.rekeys if after.rekeys >= before.rekeys else after.rekeys
    return seen


def summarize(result: SoakResult, server_log: str) -> str:
    samples = result.samples
    lines = [f"soak: {result.minutes:g} min, {len(samples)} samples, {result.flaps} flaps of wan2"]
    if samples:
        for side in ("server", "client"):
            rss = [getattr(s, f"{side}_rss_kb") / 1024 for s in samples]
            fds = [getattr(s, f"{side}_fds") for s in samples]
            lines.append(
                f"  {side}: RSS {rss[0]:.1f} -> {rss[-1]:.1f} MB (min {min(rss):.1f}, "
                f"max {max(rss):.1f}); open files {fds[0]} -> {fds[-1]} (max {max(fds)})"
            )
        pings = sum(s.tunnel_ping for s in samples)
        lines.append(f"  tunnel pings at the samples: {pings}/{len(samples)}")
        lines.append(f"  rekeys: {rekeys_seen(samples)} (every {result.rekey_s:g} s asked)")
    mbit = result.bulk_mbit
    median = statistics.median(mbit) if mbit else 0.0
    lines.append(
        f"  TCP bulk: {result.bulk_runs} runs of {BULK_SECONDS:g} s, {result.bulk_failed} failed, "
        f"median {median:.1f} Mbit/s"
    )
    lines.extend(f"    failed {error}" for error in result.bulk_errors)
    if result.probes:
        lines.append(
            f"  small UDP: {result.probes.get('received')} received, "
            f"{result.probes.get('lost')} lost, longest gap {result.probes.get('max_gap_ms')} ms"
        )
    drops = ", ".join(f"{reason} {n}" for reason, n in sorted(result.server_drops.items()))
    lines.append(f"  server drops: {drops or 'none'}")
    lines.append(f"  server log: {len(server_log.splitlines())} lines")
    lines.append("  result: " + ("; ".join(result.failures) if result.failures else "pass"))
    return "\n".join(lines)
