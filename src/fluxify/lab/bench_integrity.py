"""The ``integrity`` scenario of ``fluxify-bench lab``: large checked TCP transfers through Fluxify
with its offloads on, and the kernel's checksum error counters at every end.

Four cases, each one transfer of ``size`` bytes (default 1 GB) with SHA-256 at both ends
(``lab.transfer``): upload (client -> internet host, through the server's NAT) and download
(server -> the client's tunnel address), over IPv4 and IPv6. The ``*CsumErrors`` counters of
``nstat`` in the client, server and internet namespaces are read before and after; any
increase is a failure. A case passes when both ends counted ``size`` bytes with one SHA-256.
The checked transfer and the counter reading are shared with the offload tests
(``tests/client/test_offload_transfer.py``).
"""

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fluxify.errors import HostError
from fluxify.lab.bench_measure import BENCH_CLIENT, fluxify_running
from fluxify.lab.bench_report import ScenarioResult
from fluxify.lab.bench_scenarios import BenchConfig, Scenario
from fluxify.lab.deployment import Deployment, wait_until
from fluxify.lab.testbed import Testbed

GB = 1_000_000_000
TRANSFER = [sys.executable, "-m", "fluxify.lab.transfer"]
MIN_TIMEOUT_S = 60.0
SLOWEST_BYTES_S = 2_500_000  # 20 Mbit/s: a transfer slower than this times out
FIRST_PORT = 5311
OFFLOAD_LOG = "data plane offloads:"
CASES = (
    ("upload_v4", "upload, IPv4"),
    ("upload_v6", "upload, IPv6"),
    ("download_v4", "download, IPv4"),
    ("download_v6", "download, IPv6"),
)


@dataclass(frozen=True)
class CheckedTransfer:
    """What the two ends of one transfer of ``size`` bytes reported."""

    size: int
    sent_bytes: int
    received_bytes: int
    sent_sha256: str
    received_sha256: str
    seconds: float  # the sender's, from connect until its last byte was handed to the kernel

    @property
    def ok(self) -> bool:
        return (
            self.sent_bytes == self.received_bytes == self.size
            and self.sent_sha256 == self.received_sha256
        )

    @property
    def mbit_s(self) -> float:
        return round(self.received_bytes * 8 / self.seconds / 1e6, 1) if self.seconds > 0 else 0.0

    def problem(self) -> str | None:
        """Why the transfer does not prove anything whole, or None."""
        if self.received_bytes != self.size or self.sent_bytes != self.size:
            return f"sent {self.sent_bytes} and received {self.received_bytes} of {self.size} bytes"
        if self.sent_sha256 != self.received_sha256:
            return f"sha256 differs: sent {self.sent_sha256}, received {self.received_sha256}"
        return None


def transfer_timeout_s(size: int) -> float:
    """How long a transfer of ``size`` bytes may take (either end gives up after it)."""
    return max(MIN_TIMEOUT_S, size / SLOWEST_BYTES_S)


def checked_transfer(
    dep: Deployment, *, receiver_ns: str, sender_ns: str, host: str, port: int, size: int
) -> CheckedTransfer:
    """Send ``size`` bytes from ``sender_ns`` to ``host``:``port`` (a receiver started in
    ``receiver_ns``); both ends' byte counts and SHA-256."""
    timeout = transfer_timeout_s(size)
    receiver = dep.bed.spawn(
        receiver_ns,
        [*TRANSFER, "receive", "--port", str(port), "--timeout", f"{timeout:g}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None
    if "listening" not in receiver.stdout.readline():
        raise HostError(f"the transfer receiver in {receiver_ns} did not listen on {port}")
    argv = [*TRANSFER, "send", "--host", host, "--port", str(port), "--bytes", str(size)]
    sent = dep.bed.run(sender_ns, [*argv, "--timeout", f"{timeout:g}"], timeout=timeout + 30)
    received, _ = receiver.communicate(timeout=timeout + 30)
    return judge_reports(size, _last_json(sent.stdout), _last_json(received))


def judge_reports(
    size: int, sent: Mapping[str, Any], received: Mapping[str, Any]
) -> CheckedTransfer:
    """The :class:`CheckedTransfer` of a sender's and a receiver's JSON report."""
    for role, report in (("sender", sent), ("receiver", received)):
        if "error" in report:
            raise HostError(f"the transfer {role} failed: {report['error']}")
    return CheckedTransfer(
        size=size,
        sent_bytes=int(sent["bytes"]),
        received_bytes=int(received["bytes"]),
        sent_sha256=str(sent["sha256"]),
        received_sha256=str(received["sha256"]),
        seconds=float(sent.get("seconds", 0.0)),
    )


def _last_json(output: str) -> dict[str, Any]:
    lines = output.strip().splitlines()
    if not lines:
        raise HostError("a transfer end printed nothing")
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def csum_errors(bed: Testbed, netns: str) -> dict[str, int]:
    """Every ``*CsumErrors`` counter of ``netns`` (absolute, zeros included), from ``nstat``."""
    return parse_nstat(bed.run(netns, ["nstat", "-asz", "*CsumErrors"]).stdout)


def parse_nstat(output: str) -> dict[str, int]:
    """The ``*CsumErrors`` counters of ``nstat -asz`` output; the TCP one must be there."""
    counters: dict[str, int] = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].endswith("CsumErrors"):
            counters[fields[0]] = int(fields[1])
    if "TcpInCsumErrors" not in counters:
        raise HostError(f"nstat shows no TcpInCsumErrors: {output.strip()[-200:]!r}")
    return counters


def increases(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """The counters that grew from ``before`` to ``after``, by how much."""
    grown = {name: value - before.get(name, 0) for name, value in after.items()}
    return {name: delta for name, delta in grown.items() if delta > 0}


def record_case(result: ScenarioResult, key: str, label: str, check: CheckedTransfer) -> None:
    """A case's pass (1) or fail (0), Mbit/s and seconds; a failure also in ``failures``."""
    result.add(f"{key}_mbit", f"{label}, goodput", "Mbit/s", check.mbit_s)
    result.add(f"{key}_s", f"{label}, seconds", "s", round(check.seconds, 2))
    result.add(f"{key}_pass", f"{label}, sha256 and length match", "pass", float(check.ok))
    problem = check.problem()
    if problem is not None:
        result.failures.append(f"{label}: {problem}")
    else:
        result.notes.append(f"{label}: {check.size} bytes, sha256 {check.received_sha256}")


def record_counters(
    result: ScenarioResult, role: str, before: Mapping[str, int], after: Mapping[str, int]
) -> None:
    """The growth of one namespace's checksum error counters: a metric, a failure if any."""
    grown = increases(before, after)
    result.add(
        f"csum_errors_{role}", f"checksum errors counted, {role}", "count", sum(grown.values())
    )
    if grown:
        shown = ", ".join(f"{name} +{delta}" for name, delta in sorted(grown.items()))
        result.failures.append(f"{role} namespace counted checksum errors: {shown}")


def integrity(size: int = GB) -> Scenario:
    """The scenario with transfers of ``size`` bytes (small in the tests, 1 GB in the suite)."""

    def run(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
        t = dep.t
        namespaces = {"client": t.client_ns, "server": t.server_ns, "internet": t.internet_ns}
        with fluxify_running(dep):
            wait_until("ping v6 through the tunnel", lambda: dep.ping_internet(v6=True))
            stats = dep.client_stats(BENCH_CLIENT)
            ends = {
                "upload_v4": (t.internet_ns, t.client_ns, str(t.internet_host_v4.ip)),
                "upload_v6": (t.internet_ns, t.client_ns, str(t.internet_host_v6.ip)),
                "download_v4": (t.client_ns, t.server_ns, str(stats["client_ip"])),
                "download_v6": (t.client_ns, t.server_ns, str(stats["client_ip6"])),
            }
            before = {role: csum_errors(dep.bed, ns) for role, ns in namespaces.items()}
            for port, (key, label) in enumerate(CASES, start=FIRST_PORT):
                receiver_ns, sender_ns, host = ends[key]
                started = time.monotonic()
                try:
                    check = checked_transfer(
                        dep,
                        receiver_ns=receiver_ns,
                        sender_ns=sender_ns,
                        host=host,
                        port=port,
                        size=size,
                    )
                except (HostError, OSError, subprocess.SubprocessError, ValueError) as exc:
                    result.add(f"{key}_pass", f"{label}, sha256 and length match", "pass", 0.0)
                    result.failures.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
                    continue
                record_case(result, key, label, check)
                print(
                    f"    {label}: {'ok' if check.ok else 'FAILED'}, {check.mbit_s} Mbit/s, "
                    f"{time.monotonic() - started:.1f} s",
                    flush=True,
                )
            after = {role: csum_errors(dep.bed, ns) for role, ns in namespaces.items()}
            for role in namespaces:
                record_counters(result, role, before[role], after[role])
            result.notes.extend(offload_lines(dep))
        result.notes.append(
            f"one transfer of {size} bytes per case (not repeated); seconds are the sender's"
        )

    return run


def offload_lines(dep: Deployment) -> list[str]:
    """The offloads each end's data plane reported at start (its last such log line)."""
    lines = []
    for role, log in (("server", "server.log"), ("client", f"{BENCH_CLIENT}.log")):
        found = [line for line in dep.log(log).splitlines() if OFFLOAD_LOG in line]
        if found:
            lines.append(f"{role}: {found[-1][found[-1].index(OFFLOAD_LOG) :]}")
    return lines
