"""The ``flood`` scenario of ``fluxify-bench lab``, and the flooder it (and the tests) run.

A bonded client uploads through the tunnel while another client namespace behind the same ISPs
floods the server's UDP port at full rate from another address: random garbage, datagrams of
the live session with a broken tag, and exact replays of heartbeats, handshakes and feedback
captured on the ISP's link; then, instead, 2000 idle TCP connections and a stream of anonymous
TLS handshakes at the control port. Reported: goodput unflooded and under each flood in the same
run, and their ratios (issue 13's target: >= 0.80).

``... control --host H --idle N --idle-bind A --handshake-bind B --seconds S`` is the control-plane
flood: N idle TCP connections out of interface A, then anonymous TLS handshakes out of B;
``... session --host H --pki DIR --name N`` times session requests (to run during it).

``python -m fluxify.lab.bench_flood capture --iface wan --port P --out FILE`` records the
client's datagrams to port P seen on an interface (AF_PACKET); ``... flood --host H --port P
--captured FILE --seconds S`` sends the mix and prints what it sent by kind, and how many
datagrams came back to it (a replay must get no answer), as JSON.
"""

import argparse
import asyncio
import base64
import json
import random
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from fluxify.errors import HostError
from fluxify.lab.bench_measure import fluxify_running, tunneled
from fluxify.lab.bench_report import Ratio, ScenarioResult
from fluxify.lab.bench_scenarios import BenchConfig, repeat
from fluxify.lab.deployment import Deployment
from fluxify.linux.limits import raise_open_file_limit

FLOOD_MODULE = [sys.executable, "-m", "fluxify.lab.bench_flood"]
SERVER_UDP_PORT = 8000  # the server's default data port
SERVER_CONTROL_PORT = 8443
CAPTURE_COUNT = 400
# A flood the flooder's own core does not limit: on a 2-core box a full-rate Python flooder takes
# one of the two cores the client and the server share, whatever the server does.
CAPPED_RATE = 20_000.0
CAPTURE_SECONDS = 8.0
ETH_P_ALL = 0x0003  # (ETH_P_IP saw nothing on the lab's veths)
ETHERTYPE_IPV4 = b"\x08\x00"
ETH_HEADER_SIZE = 14
CONTROL_TYPES = frozenset({2, 3, 5})  # heartbeat (and echo), handshake, feedback
HEADER_SIZE = 22
MIN_DATAGRAM_SIZE = 50
KINDS = ("garbage", "bad tag", "replayed control")


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
    """Send the mix as fast as one socket can (or at ``rate`` datagrams/s) for ``seconds``;
    count what came back."""
    rng = random.Random(13)
    control = [d for d in captured if d[1] in CONTROL_TYPES] or captured
    broken = []
    for datagram in captured:
        buf = bytearray(datagram)
        buf[-1] ^= 0x5A  # the tag: valid session, valid header, fails authentication
        broken.append(bytes(buf))
    garbage = [rng.randbytes(rng.randrange(60, 1400)) for _ in range(256)]
    pools = [garbage, broken or garbage, control or garbage]
    sent = dict.fromkeys(KINDS, 0)
    answers = 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect((host, port))
    started = time.monotonic()
    deadline = started + seconds
    index = 0
    with sock:
        while (now := time.monotonic()) < deadline:
            if rate and index > (now - started) * rate:
                time.sleep(64 / rate)
                continue
            for _ in range(64):
                kind = index % 3
                pool = pools[kind]
                try:
                    sock.send(pool[(index // 3) % len(pool)])
                    sent[KINDS[kind]] += 1
                except (BlockingIOError, ConnectionRefusedError):
                    pass
                index += 1
            answers += _drain(sock)
        time.sleep(1.0)  # an echo or probe would come within a round trip
        answers += _drain(sock)
    return {"sent": sent, "total": sum(sent.values()), "answers": answers}


def _drain(sock: socket.socket) -> int:
    got = 0
    while True:
        try:
            sock.recv(65536)
            got += 1
        except (BlockingIOError, ConnectionRefusedError):
            return got


def control_flood(
    host: str, port: int, idle: int, *, idle_bind: str, handshake_bind: str, seconds: float
) -> dict[str, Any]:
    """``idle`` TCP connections that never send a byte (out of interface ``idle_bind``), then
    anonymous TLS handshakes from 4 threads (out of ``handshake_bind``) for ``seconds``; prints
    a "ready" line once the idle ones are up."""
    raise_open_file_limit()
    held: list[socket.socket] = []
    refused = 0
    for _ in range(idle):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, idle_bind.encode())
        sock.settimeout(3.0)  # a full accept backlog: give up on this one, go on
        try:
            sock.connect((host, port))
            held.append(sock)
        except OSError:  # over the server's caps: reset while connecting
            sock.close()
            refused += 1
    print(json.dumps({"ready": len(held), "refused": refused}), flush=True)
    anonymous = ssl.create_default_context()
    anonymous.check_hostname = False
    anonymous.verify_mode = ssl.CERT_NONE
    counts = {"handshakes": 0}
    stop = time.monotonic() + seconds

    def hammer() -> None:
        while time.monotonic() < stop:
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

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
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
        "still_open": still_open,
        "handshakes": counts["handshakes"],
        "handshakes_per_s": round(counts["handshakes"] / seconds, 1),
    }


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
    dep: Deployment, flooder_ns: str, captured: Path, seconds: float, rate: float = 0.0
) -> Any:
    """The flooder in ``flooder_ns`` (another client home) for ``seconds``; a Popen."""
    argv = [*FLOOD_MODULE, "flood", "--host", str(dep.t.server_v4.ip)]
    argv += ["--captured", str(captured), "--seconds", f"{seconds:g}", "--rate", f"{rate:g}"]
    return dep.bed.spawn(flooder_ns, argv, stdout=subprocess.PIPE, text=True)


def flood_report(process: Any) -> dict[str, Any]:
    out, _ = process.communicate(timeout=60)
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def flood_scenario(dep: Deployment, cfg: BenchConfig, result: ScenarioResult) -> None:
    """Upload goodput without, then with the flood, in the same deployment and run."""
    flooder_ns = dep.bed.add_client_home()
    captured = cfg.workdir / "captured.b64"
    rates: list[float] = []
    with fluxify_running(dep):
        capture_client_datagrams(dep, captured)
        measure = partial(_upload, dep, cfg.seconds)
        repeat(result, "unflooded", "upload, unflooded", cfg.runs, measure)
        repeat(
            result,
            "flooded",
            "upload while another address floods the UDP port",
            cfg.runs,
            partial(_flooded_upload, dep, cfg.seconds, flooder_ns, captured, rates),
        )
        repeat(
            result,
            "flooded_capped",
            f"upload while another address floods the UDP port at {CAPPED_RATE:g}/s",
            cfg.runs,
            partial(_flooded_upload, dep, cfg.seconds, flooder_ns, captured, [], CAPPED_RATE),
        )
        repeat(
            result,
            "control_flooded",
            "upload while 2000 idle connections and anonymous handshakes hit the control port",
            cfg.runs,
            partial(_control_flooded_upload, dep, cfg.seconds, flooder_ns),
        )
    result.ratios.append(
        Ratio("flooded / unflooded upload (target >= 0.80)", "flooded", "unflooded")
    )
    result.ratios.append(
        Ratio(f"flooded at {CAPPED_RATE:g}/s / unflooded upload", "flooded_capped", "unflooded")
    )
    result.ratios.append(
        Ratio("control-flooded / unflooded upload (target >= 0.80)", "control_flooded", "unflooded")
    )
    if rates:
        result.notes.append(f"flood rate: {min(rates):.0f}-{max(rates):.0f} datagrams/s")
    result.notes.append(
        "flood: garbage, valid-session bad-tag and replayed captured control packets in turn, "
        "from one socket in another client namespace behind the same ISPs, as fast as it sends"
    )


def _control_flooded_upload(dep: Deployment, seconds: float, flooder_ns: str) -> float:
    argv = [*FLOOD_MODULE, "control", "--host", str(dep.t.server_v4.ip), "--idle", "2000"]
    argv += ["--idle-bind", "wan2", "--handshake-bind", "wan2", "--seconds", f"{seconds + 2:g}"]
    flooding = dep.bed.spawn(flooder_ns, argv, stdout=subprocess.PIPE, text=True)
    try:
        assert flooding.stdout is not None
        flooding.stdout.readline()  # the idle connections are up; the handshakes start
        time.sleep(1.0)
        mbit = _upload(dep, seconds)
    finally:
        report = flood_report(flooding)
    print(f"    control flood: {report}", flush=True)
    return mbit


def _upload(dep: Deployment, seconds: float) -> float:
    return tunneled(dep, seconds, "upload").mbit_s


def _flooded_upload(  # noqa: PLR0917 - one partial per metric
    dep: Deployment,
    seconds: float,
    flooder_ns: str,
    captured: Path,
    rates: list[float],
    rate: float = 0.0,
) -> float:
    flooding = start_flood(dep, flooder_ns, captured, seconds + 2.0, rate)
    try:
        time.sleep(1.0)  # the flood is at full rate before the measurement starts
        mbit = _upload(dep, seconds)
    finally:
        report = flood_report(flooding)
    rates.append(report["total"] / (seconds + 2.0))
    if report["answers"]:
        print(f"    the flooder got {report['answers']} answers", flush=True)
    return mbit


if __name__ == "__main__":
    sys.exit(main())
