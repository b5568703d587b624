"""The ``flood`` scenario of ``fluxify-bench lab``, and the flooder it (and the tests) run.

A bonded client uploads through the tunnel while another client namespace behind the same ISPs
floods the server's UDP port from another address (at full rate and at fixed rates): random
garbage, datagrams of the live session with a broken tag, and exact replays of heartbeats,
handshakes and feedback captured on the ISP's link; then, instead, 2000 idle TCP connections and
anonymous TLS handshakes at the control port (at full rate and as a stream of 200/s) while a new
client times its session requests. All of it on the lab's unshaped links (the tunnel is
CPU-bound there: whatever the flooder, and the lab's forwarding of its datagrams, takes of this
small box shows) and again with both uplinks shaped to 50 Mbit/s. Reported per variant: goodput,
its ratio to the unflooded goodput of the same links (issue 13's target: >= 0.80), the rate the
flooder achieved and the CPU split of server, client, flooder and the whole box.

``... control --host H --idle N --idle-bind A --handshake-bind B --seconds S [--rate R]`` is the
control-plane flood: N idle TCP connections out of interface A, then anonymous TLS handshakes
out of B; ``... session --host H --pki DIR --name N`` times session requests (to run during it).

``python -m fluxify.lab.bench_flood capture --iface wan --port P --out FILE`` records the
client's datagrams to port P seen on an interface (AF_PACKET); ``... flood --host H --port P
--captured FILE --seconds S [--rate R]`` sends the mix by ``sendmmsg`` and prints what it sent by
kind, its rate and CPU, and how many datagrams came back to it (a replay must get no answer), as
JSON.
"""

import argparse
import asyncio
import base64
import errno
import json
import os
import random
import selectors
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fluxify.errors import HostError
from fluxify.lab.bench_measure import cpu_seconds, fluxify_running, tunneled
from fluxify.lab.bench_report import Ratio, ScenarioResult
from fluxify.lab.bench_scenarios import BenchConfig
from fluxify.lab.deployment import Deployment
from fluxify.lab.mmsg import RingSender
from fluxify.linux.limits import raise_open_file_limit

FLOOD_MODULE = [sys.executable, "-m", "fluxify.lab.bench_flood"]
SERVER_UDP_PORT = 8000  # the server's default data port
SERVER_CONTROL_PORT = 8443
CLOSED_PORT = 9  # of the server's host: nothing listens there (the discard port)
CAPTURE_COUNT = 400
# Full rate (0), and rates the flooder's own core does not limit: on a 2-core box a full-rate
# flooder (and the lab's forwarding of its datagrams, done on its core) takes one of the two
# cores the client and the server share, whatever the server does.
FLOOD_RATES = (0.0, 20_000.0, 50_000.0)
CONTROL_RATES = (0.0, 200.0)  # anonymous handshakes/s: full rate (4 threads), and a stream
HAMMER_THREADS = 4
IDLE_CONNECT_S = 5.0  # the idle connections are all started at once, then given this long
NEW_CLIENT = "newcomer"  # asks for sessions during the control flood
SHAPED_MBIT = 50.0  # the shaped variant: both uplinks, as the bond-2x50 scenario
MBIT = "Mbit/s"
CAPTURE_SECONDS = 8.0
ETH_P_ALL = 0x0003  # (ETH_P_IP saw nothing on the lab's veths)
ETHERTYPE_IPV4 = b"\x08\x00"
ETH_HEADER_SIZE = 14
CONTROL_TYPES = frozenset({2, 3, 5})  # heartbeat (and echo), handshake, feedback
HEADER_SIZE = 22
MIN_DATAGRAM_SIZE = 50
KINDS = ("garbage", "bad tag", "replayed control")
RING_PER_KIND = 256  # distinct datagrams of each kind the flooder cycles through
FLOOD_BATCH = 64  # datagrams per sendmmsg


# --- capture and flood (run inside the lab's namespaces) --------------------------------------


def capture(iface: str, port: int, count: int, seconds: float) -> list[bytes]:
    """Up to ``count`` UDP payloads to ``port`` seen on ``iface`` within ``seconds``."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.settimeout(0.5)
    found: list[bytes] = []
    deadline = time.monotonic() + seconds
    with sock:
        while len(found) < count and time.monotonic() < deadline:
            try:
                frame = sock.recv(65536)
            except TimeoutError:
                continue
            ip = frame[ETH_HEADER_SIZE:]
            if (
                frame[12:14] != ETHERTYPE_IPV4
                or len(ip) < 28
                or ip[0] >> 4 != 4
                or ip[9] != socket.IPPROTO_UDP
            ):
                continue
            ihl = (ip[0] & 0x0F) * 4
            (dport,) = struct.unpack_from(">H", ip, ihl + 2)
            if dport == port and len(ip) >= ihl + 8 + MIN_DATAGRAM_SIZE:
                found.append(bytes(ip[ihl + 8 :]))
    return found


def flood(
    host: str, port: int, captured: list[bytes], seconds: float, rate: float = 0.0
) -> dict[str, Any]:
    """Send the mix as fast as ``sendmmsg`` goes (or at ``rate`` datagrams/s) for ``seconds``;
    count what came back. The kinds take turns datagram by datagram, each its own size."""
    rng = random.Random(13)
    control = [d for d in captured if d[1] in CONTROL_TYPES] or captured
    broken = []
    for datagram in captured:
        buf = bytearray(datagram)
        buf[-1] ^= 0x5A  # the tag: valid session, valid header, fails authentication
        broken.append(bytes(buf))
    garbage = [rng.randbytes(rng.randrange(60, 1400)) for _ in range(RING_PER_KIND)]
    pools = [garbage, broken or garbage, control or garbage]
    ring = [pools[i % 3][(i // 3) % len(pools[i % 3])] for i in range(3 * RING_PER_KIND)]
    answers = 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect((host, port))
    sender = RingSender(sock, ring)
    cpu_before = time.process_time()
    started = time.monotonic()
    deadline = started + seconds
    with sock:
        while (now := time.monotonic()) < deadline:
            if rate and sender.sent > (now - started) * rate:
                time.sleep(FLOOD_BATCH / rate)
                continue
            sender.send(FLOOD_BATCH)
            answers += _drain(sock)
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu_before
        time.sleep(1.0)  # an echo or probe would come within a round trip
        answers += _drain(sock)
    total = sender.sent
    sent = {kind: total // 3 + (1 if total % 3 > k else 0) for k, kind in enumerate(KINDS)}
    return {
        "sent": sent,
        "total": total,
        "answers": answers,
        "rate": round(total / elapsed, 1),
        "cpu_s": round(cpu, 2),
        "seconds": round(elapsed, 2),
    }


def _drain(sock: socket.socket) -> int:
    got = 0
    while True:
        try:
            sock.recv(65536)
            got += 1
        except (BlockingIOError, ConnectionRefusedError):
            return got


def control_flood(
    host: str,
    port: int,
    idle: int,
    *,
    idle_bind: str,
    handshake_bind: str,
    seconds: float,
    rate: float = 0.0,
) -> dict[str, Any]:
    """``idle`` TCP connections that never send a byte (out of interface ``idle_bind``, all
    started at once, see ``_open_idle``), then anonymous TLS handshakes from 4 threads (out of
    ``handshake_bind``) for ``seconds``, as fast as they go or ``rate`` attempts/s in all;
    prints a "ready" line once the idle ones are up (or given up)."""
    raise_open_file_limit()
    held, refused, unanswered = _open_idle(host, port, idle, idle_bind)
    print(
        json.dumps({"ready": len(held), "refused": refused, "unanswered": unanswered}),
        flush=True,
    )
    anonymous = ssl.create_default_context()
    anonymous.check_hostname = False
    anonymous.verify_mode = ssl.CERT_NONE
    counts = {"handshakes": 0}
    cpu_before = time.process_time()
    stop = time.monotonic() + seconds

    def hammer() -> None:
        next_at = time.monotonic()
        while (now := time.monotonic()) < stop:
            if rate:
                if now < next_at:
                    time.sleep(next_at - now)
                next_at += HAMMER_THREADS / rate
            try:
                with socket.socket() as raw:
                    raw.settimeout(3)
                    raw.setsockopt(
                        socket.SOL_SOCKET, socket.SO_BINDTODEVICE, handshake_bind.encode()
                    )
                    raw.connect((host, port))
                    anonymous.wrap_socket(raw, server_hostname="x").close()
            except (OSError, ssl.SSLError):
                pass
            counts["handshakes"] += 1

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(HAMMER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu_before
    still_open = 0
    for sock in held:
        sock.setblocking(False)
        try:
            sock.recv(1)  # EOF or a byte: the server closed it
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        sock.close()
    return {
        "idle": idle,
        "held": len(held),
        "refused": refused,
        "unanswered": unanswered,
        "still_open": still_open,
        "handshakes": counts["handshakes"],
        "handshakes_per_s": round(counts["handshakes"] / seconds, 1),
        "cpu_s": round(cpu, 2),
        "seconds": seconds,
    }


def _open_idle(host: str, port: int, count: int, bind: str) -> tuple[list[socket.socket], int, int]:
    """``count`` connections started at once, out of interface ``bind``; after at most
    ``IDLE_CONNECT_S``: those that connected, how many were refused (reset: over the server's
    caps) and how many got no answer (their SYNs dropped, by the kernel's flood filter or a
    full backlog; closed)."""
    pending: dict[int, socket.socket] = {}
    held: list[socket.socket] = []
    refused = 0
    with selectors.DefaultSelector() as selector:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bind.encode())
            sock.setblocking(False)
            if sock.connect_ex((host, port)) not in {0, errno.EINPROGRESS}:
                sock.close()
                refused += 1
                continue
            pending[sock.fileno()] = sock
            selector.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + IDLE_CONNECT_S
        while pending and (left := deadline - time.monotonic()) > 0:
            for key, _events in selector.select(left):
                sock = pending.pop(key.fd)
                selector.unregister(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    held.append(sock)
                else:
                    sock.close()
                    refused += 1
    for sock in pending.values():
        sock.close()
    return held, refused, len(pending)


def time_sessions(host: str, port: int, pki: Path, name: str, count: int) -> list[float]:
    """Seconds each of ``count`` session requests took (TLS handshake to response)."""
    from fluxify.client.config import ServerAddress  # noqa: PLC0415 - only this role
    from fluxify.client.control import fetch_session  # noqa: PLC0415
    from fluxify.pki.client_material import load_client_material  # noqa: PLC0415
    from fluxify.protocol.control import SessionRequest  # noqa: PLC0415

    material = load_client_material(pki, name)
    took: list[float] = []
    for _ in range(count):
        started = time.monotonic()
        asyncio.run(fetch_session(ServerAddress(host, port), material, SessionRequest(name)))
        took.append(round(time.monotonic() - started, 3))
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxify.lab.bench_flood")
    sub = parser.add_subparsers(dest="role", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("--iface", required=True)
    cap.add_argument("--port", type=int, default=SERVER_UDP_PORT)
    cap.add_argument("--count", type=int, default=CAPTURE_COUNT)
    cap.add_argument("--seconds", type=float, default=CAPTURE_SECONDS)
    cap.add_argument("--out", type=Path, required=True)
    fl = sub.add_parser("flood")
    fl.add_argument("--host", required=True)
    fl.add_argument("--port", type=int, default=SERVER_UDP_PORT)
    fl.add_argument("--captured", type=Path, required=True)
    fl.add_argument("--seconds", type=float, required=True)
    fl.add_argument("--rate", type=float, default=0.0, help="datagrams/s (0: full rate)")
    co = sub.add_parser("control")
    co.add_argument("--host", required=True)
    co.add_argument("--port", type=int, default=SERVER_CONTROL_PORT)
    co.add_argument("--idle", type=int, default=2000)
    co.add_argument("--idle-bind", required=True)
    co.add_argument("--handshake-bind", required=True)
    co.add_argument("--seconds", type=float, required=True)
    co.add_argument("--rate", type=float, default=0.0, help="handshakes/s (0: full rate)")
    se = sub.add_parser("session")
    se.add_argument("--host", required=True)
    se.add_argument("--port", type=int, default=SERVER_CONTROL_PORT)
    se.add_argument("--pki", type=Path, required=True)
    se.add_argument("--name", required=True)
    se.add_argument("--count", type=int, default=5)
    ns = parser.parse_args(argv)
    if ns.role == "session":
        took = time_sessions(ns.host, ns.port, ns.pki, ns.name, ns.count)
        print(json.dumps({"session_s": took}), flush=True)
        return 0
    if ns.role == "control":
        result = control_flood(
            ns.host,
            ns.port,
            ns.idle,
            idle_bind=ns.idle_bind,
            handshake_bind=ns.handshake_bind,
            seconds=ns.seconds,
            rate=ns.rate,
        )
        print(json.dumps(result), flush=True)
        return 0
    if ns.role == "capture":
        found = capture(ns.iface, ns.port, ns.count, ns.seconds)
        ns.out.write_text("\n".join(base64.b64encode(d).decode() for d in found))
        print(json.dumps({"captured": len(found)}), flush=True)
        return 0
    lines = ns.captured.read_text().split()
    report = flood(ns.host, ns.port, [base64.b64decode(x) for x in lines], ns.seconds, ns.rate)
    print(json.dumps(report), flush=True)
    return 0


# --- driving it from a deployment --------------------------------------------------------------


def capture_client_datagrams(dep: Deployment, out: Path) -> int:
    """Record the client's datagrams on ISP 1's link to the server; returns how many."""
    uplink = dep.t.uplink(1)
    done = dep.bed.run(
        uplink.isp_ns,
        [*FLOOD_MODULE, "capture", "--iface", uplink.isp_wan_ifname, "--out", str(out)],
        timeout=CAPTURE_SECONDS + 30,
    )
    count = int(json.loads(done.stdout.strip().splitlines()[-1])["captured"])
    if not count:
        raise HostError("captured no datagrams of the client on ISP 1's link")
    return count


def start_flood(
    dep: Deployment,
    flooder_ns: str,
    captured: Path,
    seconds: float,
    *,
    rate: float = 0.0,
    port: int = SERVER_UDP_PORT,
) -> Any:
    """The flooder in ``flooder_ns`` (another client home) for ``seconds``, at the server's
    host's UDP ``port``; a Popen."""
    argv = [*FLOOD_MODULE, "flood", "--host", str(dep.t.server_v4.ip), "--port", str(port)]
    argv += ["--captured", str(captured), "--seconds", f"{seconds:g}", "--rate", f"{rate:g}"]
    return dep.bed.spawn(flooder_ns, argv, stdout=subprocess.PIPE, text=True)


def flood_report(process: Any) -> dict[str, Any]:
    out, _ = process.communicate(timeout=60)
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def flood_scenario(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
    """Upload goodput without, then with each flood, in the same deployment and run: first on
    the lab's unshaped links (the tunnel is CPU-bound, so any CPU the flood takes shows), then
    with both uplinks shaped to ``SHAPED_MBIT`` (the tunnel is not). Each flooded run records
    the rate the flooder achieved and the CPU split of the server, client and flooder.

    The variants take turns run by run (so a load that comes and goes on the box falls on all
    of them alike). Unshaped, each UDP flood is also sent to a closed port of the server's host
    (``CLOSED_PORT``): the flooder and the lab's forwarding cost the box the same, the server
    process nothing; flooded at Fluxify's port / flooded at the closed port is what Fluxify's
    own handling of the flood costs the transfer."""
    flooder_ns = dep.bed.add_client_home()
    captured = cfg.workdir / "captured.b64"
    with fluxify_running(dep) as (client_pid, server_pid):
        pids = {"server": server_pid, "client": client_pid}
        capture_client_datagrams(dep, captured)
        for shaped in (False, True):
            if shaped:
                for uplink in dep.t.uplinks:
                    dep.bed.shape_uplink(uplink.number, SHAPED_MBIT)
            prefix = "shaped_" if shaped else ""
            links = f"{len(dep.t.uplinks)} x {SHAPED_MBIT:g} Mbit/s" if shaped else "unshaped"
            variants = _variants(dep, cfg.seconds, flooder_ns, captured, closed_port=not shaped)
            measure_in_turns(result, cfg.runs, pids, [v.keyed(prefix, links) for v in variants])
    result.notes.append(
        "UDP flood: garbage, valid-session bad-tag and replayed captured control datagrams in "
        "turn, from one socket in another client namespace behind the same ISPs, by sendmmsg "
        f"({FLOOD_BATCH} per call); 'at a closed port': the same flood to UDP port "
        f"{CLOSED_PORT} of the server's host, where nothing listens (the box pays for the "
        "flooder and the forwarding, the server process for nothing); control flood: 2000 idle "
        f"TCP connections (started at once, given {IDLE_CONNECT_S:g} s) then anonymous TLS "
        "handshakes from 4 threads (full rate, or a stream at a fixed rate), all out of ISP 2; "
        "connections/s counts attempts; a new client asks for 3 sessions from the client home "
        "(by ISP 1) meanwhile; the variants take turns run by run; CPU = % of one core over the "
        "upload, 'box' = both cores (200 %) incl. iperf3, the lab's forwarding and anything "
        "else running"
    )


@dataclass(frozen=True)
class Measured:
    """One flooded (or unflooded) upload: goodput, the CPU shares over it (% of one core: the
    server, the client, "box" for both cores together, and the flooder's over its own run, as
    it measured it), the flood's rate."""

    mbit_s: float
    cpu: dict[str, float] = field(default_factory=dict)
    rate: float = 0.0
    rate_unit: str = ""
    session_s: float | None = None  # the slowest of a new client's session requests meanwhile


@dataclass(frozen=True)
class Variant:
    """One row of the scenario: its key, its label, how to measure one run of it, and the key
    of the row it is also compared with (besides the unflooded one)."""

    key: str
    label: str
    measure: Callable[..., Measured]  # called with pids=: the processes to take CPU of
    also_against: str = ""
    prefix: str = ""
    reference: bool = False  # a row to compare with, not one the target is about

    def keyed(self, prefix: str, links: str) -> "Variant":
        """The same row for one set of links: keys prefixed, the label naming the links."""
        return Variant(
            prefix + self.key,
            f"{links}: {self.label}",
            self.measure,
            prefix + self.also_against if self.also_against else "",
            prefix,
            self.reference,
        )


def _variants(
    dep: Deployment, seconds: float, flooder_ns: str, captured: Path, *, closed_port: bool
) -> list[Variant]:
    variants = [Variant("unflooded", "unflooded", partial(_plain_upload, dep, seconds))]
    for rate in FLOOD_RATES:
        key = "flooded" if not rate else f"flooded_{rate / 1000:g}k"
        what = "at full rate" if not rate else f"at {rate:g}/s"
        closed_key = f"closed_port_{key}"
        flood = partial(_flooded_upload, dep, seconds, flooder_ns, captured, rate=rate)
        variants.append(Variant(key, f"UDP flood {what}", flood, closed_key if closed_port else ""))
        if closed_port:
            at_closed = partial(flood, port=CLOSED_PORT)
            label = f"UDP flood {what} at a closed port"
            variants.append(Variant(closed_key, label, at_closed, reference=True))
    for rate in CONTROL_RATES:
        key = "control_flooded" if not rate else f"control_flooded_{rate:g}"
        what = "at full rate" if not rate else f"at {rate:g}/s"
        control = partial(_control_flooded_upload, dep, seconds, flooder_ns, rate)
        variants.append(Variant(key, f"2000 idle + handshakes {what}", control))
    return variants


def measure_in_turns(
    result: ScenarioResult, runs: int, pids: dict[str, int], variants: list[Variant]
) -> None:
    """``runs`` runs of each variant, one of each in turn, then each variant's ratios."""
    for index in range(runs):
        for variant in variants:
            _measure_run(result, (index, runs), pids, variant)
    for variant in variants:
        _add_ratios(result, variant)


def _add_ratios(result: ScenarioResult, variant: Variant) -> None:
    unflooded = variant.prefix + "unflooded"
    if variant.key == unflooded:
        return
    why = "the flooder and the lab alone" if variant.reference else "target >= 0.80"
    result.ratios.append(Ratio(f"{variant.label} / unflooded ({why})", variant.key, unflooded))
    if variant.also_against:
        result.ratios.append(
            Ratio(
                f"{variant.label} / the same at a closed port (the server's own cost)",
                variant.key,
                variant.also_against,
            )
        )


def _measure_run(
    result: ScenarioResult, run: tuple[int, int], pids: dict[str, int], variant: Variant
) -> None:
    """Run ``run`` = (index, of how many) of ``variant``: its samples, a note and a line."""
    index, runs = run
    key, label = variant.key, variant.label
    measured = variant.measure(pids=pids)
    result.add(key, label, MBIT, measured.mbit_s)
    extra = ""
    if measured.session_s is not None:
        result.add(
            f"{key}_session",
            f"{label}: a new client's session (slowest)",
            "s",
            measured.session_s,
        )
        extra = f"; a new client's session within {measured.session_s:.3f} s"
    if measured.rate_unit:
        result.add(f"{key}_rate", f"{label}: achieved rate", measured.rate_unit, measured.rate)
    cpu = ", ".join(f"{name} {share:.0f}" for name, share in measured.cpu.items())
    rate = f", {measured.rate:.0f} {measured.rate_unit}" if measured.rate_unit else ""
    result.notes.append(
        f"{label} run {index + 1}: {measured.mbit_s:.1f} Mbit/s{rate}; "
        f"CPU % of a core: {cpu}{extra}"
    )
    print(
        f"    {label}: run {index + 1}/{runs}: {measured.mbit_s:.2f} Mbit/s{rate}; "
        f"CPU {cpu}{extra}",
        flush=True,
    )


class CpuSplit:
    """CPU used from construction to ``shares()``, per process and by the whole box."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._started = time.monotonic()
        self._before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self._box_before = _box_busy_s()

    def shares(self) -> dict[str, float]:
        """% of one core each used per second of wall time; "box": all cores together."""
        wall = time.monotonic() - self._started
        shares = {
            name: 100 * (cpu_seconds(pid) - self._before[name]) / wall
            for name, pid in self._pids.items()
        }
        shares["box"] = 100 * (_box_busy_s() - self._box_before) / wall
        return shares


def _box_busy_s() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat, all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _plain_upload(dep: Deployment, seconds: float, *, pids: dict[str, int]) -> Measured:
    return Measured(*_upload(dep, seconds, pids))


def _control_flooded_upload(
    dep: Deployment, seconds: float, flooder_ns: str, rate: float = 0.0, *, pids: dict[str, int]
) -> Measured:
    """The upload during the control flood; meanwhile a new client (another identity, from the
    client's home, so by another ISP than the flood) times its session requests."""
    argv = [*FLOOD_MODULE, "control", "--host", str(dep.t.server_v4.ip), "--idle", "2000"]
    argv += ["--idle-bind", "wan2", "--handshake-bind", "wan2", "--seconds", f"{seconds + 2:g}"]
    argv += ["--rate", f"{rate:g}"]
    if not (dep.workdir / f"client-{NEW_CLIENT}").exists():
        dep.issue(NEW_CLIENT)
    ask = [*FLOOD_MODULE, "session", "--host", str(dep.t.server_v4.ip), "--name", NEW_CLIENT]
    ask += ["--pki", str(dep.workdir / f"client-{NEW_CLIENT}"), "--count", "3"]
    timings: list[float] = []

    def time_sessions() -> None:
        done = dep.bed.run(dep.t.client_ns, ask, timeout=seconds + 30)
        timings.extend(json.loads(done.stdout.strip().splitlines()[-1])["session_s"])

    flooding = dep.bed.spawn(flooder_ns, argv, stdout=subprocess.PIPE, text=True)
    try:
        assert flooding.stdout is not None
        flooding.stdout.readline()  # the idle connections are up; the handshakes start
        time.sleep(1.0)
        asking = threading.Thread(target=time_sessions, daemon=True)
        asking.start()
        mbit, cpu = _upload(dep, seconds, pids)
        asking.join(timeout=30)
    finally:
        report = flood_report(flooding)
    print(f"    control flood: {report}; a new client's sessions took {timings} s", flush=True)
    return Measured(
        mbit,
        cpu | {"flooder": _cpu_share(report)},
        float(report["handshakes_per_s"]),
        "connections/s",
        max(timings) if timings else None,
    )


def _upload(
    dep: Deployment, seconds: float, pids: dict[str, int]
) -> tuple[float, dict[str, float]]:
    """The upload's goodput and the CPU shares of ``pids`` and the box over it."""
    split = CpuSplit(pids)
    mbit = tunneled(dep, seconds, "upload").mbit_s
    return mbit, split.shares()


def _flooded_upload(
    dep: Deployment,
    seconds: float,
    flooder_ns: str,
    captured: Path,
    *,
    rate: float,
    port: int = SERVER_UDP_PORT,
    pids: dict[str, int],
) -> Measured:
    flooding = start_flood(dep, flooder_ns, captured, seconds + 2.0, rate=rate, port=port)
    try:
        time.sleep(1.0)  # the flood is at full rate before the measurement starts
        mbit, cpu = _upload(dep, seconds, pids)
    finally:
        report = flood_report(flooding)
    if report["answers"]:
        print(f"    the flooder got {report['answers']} answers", flush=True)
    return Measured(
        mbit, cpu | {"flooder": _cpu_share(report)}, float(report["rate"]), "datagrams/s"
    )


def _cpu_share(report: dict[str, Any]) -> float:
    return 100 * float(report["cpu_s"]) / max(float(report["seconds"]), 1e-9)


if __name__ == "__main__":
    sys.exit(main())
