"""A timestamped UDP stream for measuring one-way delay, reordering and loss between namespaces.

All namespaces share the host's clock, so ``receive time - send time`` is the true one-way delay.
``python -m fluxify.lab.delay_probe receive --port P --seconds S`` prints one JSON summary;
``python -m fluxify.lab.delay_probe send --host H --port P --rate-mbit R --seconds S`` paces
datagrams carrying (sequence number, send time in ns). The receiver stamps arrivals in the kernel
(SO_TIMESTAMPNS), so its own scheduling delays do not count.
"""

import argparse
import json
import socket
import struct
import sys
import time

PROBE = struct.Struct("!QQ")  # sequence number, CLOCK_REALTIME send time in ns
SO_TIMESTAMPNS = 35  # linux/asm-generic/socket.h; SCM_TIMESTAMPNS has the same value
TIMESPEC = struct.Struct("@qq")
IP_UDP_OVERHEAD_BYTES = 28
PACE_SLEEP_S = 0.0005
IDLE_END_S = 1.0  # the stream is over once nothing came for this long
SAMPLE_POINTS = 2000
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; not exported by the socket module


def send(
    host: str, port: int, *, rate_mbit: float, seconds: float, size: int, dev: str = ""
) -> dict[str, int]:
    """Send ``size``-byte datagrams at ``rate_mbit`` (IP bytes) for ``seconds``; counts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    per_second = rate_mbit * 1e6 / 8 / (size + IP_UDP_OVERHEAD_BYTES)
    payload = bytearray(size)
    sent = refused = 0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if dev:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
        sock.connect((host, port))
        start = time.monotonic()
        end = start + seconds
        while (now := time.monotonic()) < end:
            due = int((now - start) * per_second)
            if sent >= due:
                time.sleep(PACE_SLEEP_S)
                continue
            for _ in range(min(due - sent, 1000)):
                PROBE.pack_into(payload, 0, sent, time.time_ns())
                try:
                    sock.send(payload)
                except (BlockingIOError, ConnectionRefusedError):
                    refused += 1  # a full queue or an ICMP error: that datagram counts as lost
                sent += 1
    return {"sent": sent, "send_errors": refused}


def receive(port: int, seconds: float, host: str = "::") -> dict[str, object]:
    """Collect the stream for at most ``seconds``; one-way delay percentiles, order, loss."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    delays_ms: list[float] = []
    highest, reordered = -1, 0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        sock.bind((host, port))
        print(json.dumps({"listening": port}), flush=True)
        deadline = time.monotonic() + seconds
        sock.settimeout(seconds)
        while time.monotonic() < deadline:
            try:
                data, ancillary, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(TIMESPEC.size))
            except TimeoutError:
                break
            sock.settimeout(IDLE_END_S)
            if len(data) < PROBE.size or not ancillary:
                continue
            seq, sent_ns = PROBE.unpack_from(data)
            sec, nsec = TIMESPEC.unpack_from(ancillary[0][2])
            delays_ms.append((sec * 1_000_000_000 + nsec - sent_ns) / 1e6)
            if seq < highest:
                reordered += 1
            highest = max(highest, seq)
    return summarize(delays_ms, reordered, highest + 1)


def summarize(delays_ms: list[float], reordered: int, expected: int) -> dict[str, object]:
    """Percentiles of the one-way delays plus an evenly thinned sample for plots."""
    ordered = sorted(delays_ms)
    count = len(ordered)

    def pct(p: float) -> float:
        return round(ordered[min(count - 1, int(p / 100 * count))], 4) if count else float("nan")

    step = max(1, count // SAMPLE_POINTS)
    return {
        "received": count,
        "expected": expected,
        "lost": max(0, expected - count),
        "reordered": reordered,
        "owd_ms": {f"p{p:g}": pct(p) for p in (0, 1, 50, 90, 99, 99.9, 100)},
        "sample_ms": [round(d, 4) for d in delays_ms[::step]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    rx = sub.add_parser("receive")
    rx.add_argument("--port", type=int, required=True)
    rx.add_argument("--seconds", type=float, default=30.0)
    rx.add_argument("--host", default="::")
    tx = sub.add_parser("send")
    tx.add_argument("--host", required=True)
    tx.add_argument("--port", type=int, required=True)
    tx.add_argument("--rate-mbit", type=float, default=10.0)
    tx.add_argument("--seconds", type=float, default=5.0)
    tx.add_argument("--size", type=int, default=1472, help="UDP payload bytes")
    tx.add_argument("--dev", default="", help="send through this interface (SO_BINDTODEVICE)")
    args = parser.parse_args(argv)
    if args.role == "receive":
        print(json.dumps(receive(args.port, args.seconds, args.host)), flush=True)
    else:
        sent = send(
            args.host,
            args.port,
            rate_mbit=args.rate_mbit,
            seconds=args.seconds,
            size=args.size,
            dev=args.dev,
        )
        print(json.dumps(sent), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
