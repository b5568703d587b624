"""A numbered UDP probe stream and its receiver: the longest delivery gap while a path fails.

``python -m fluxify.lab.bench_gap receive --port P --count N --seconds S`` prints
``{"listening": P}``, then one JSON summary once N datagrams came or S seconds passed.
``python -m fluxify.lab.bench_gap send --host H --port P --count N --interval-ms 10`` sends N
numbered datagrams on a fixed schedule (send errors, e.g. no route for a moment, are counted and
skipped). The receiver measures gaps between its own arrival times, so no clocks are compared.
"""

import argparse
import itertools
import json
import socket
import struct
import sys
import time

SEQUENCE = struct.Struct("!I")
PAYLOAD_BYTES = 64
RECEIVE_POLL_S = 0.2


def send(host: str, port: int, count: int, interval_s: float) -> dict[str, int]:
    """Send datagrams 0..count-1, one every ``interval_s`` on an absolute schedule."""
    sent = errors = 0
    payload = bytearray(PAYLOAD_BYTES)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        for sequence in range(count):
            delay = start + sequence * interval_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            SEQUENCE.pack_into(payload, 0, sequence)
            try:
                sock.sendto(payload, (host, port))
                sent += 1
            except OSError:
                errors += 1
    return {"sent": sent, "errors": errors}


def receive(port: int, count: int, seconds: float, interval_s: float) -> dict[str, object]:
    """Record arrivals until ``count`` distinct datagrams came or ``seconds`` passed."""
    arrivals: list[tuple[int, float]] = []
    seen: set[int] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", port))
        sock.settimeout(RECEIVE_POLL_S)
        print(json.dumps({"listening": port}), flush=True)
        deadline = time.monotonic() + seconds
        while len(seen) < count and time.monotonic() < deadline:
            try:
                data = sock.recv(PAYLOAD_BYTES)
            except TimeoutError:
                continue
            if len(data) < SEQUENCE.size:
                continue
            (sequence,) = SEQUENCE.unpack_from(data)
            arrivals.append((sequence, time.monotonic()))
            seen.add(sequence)
    return summarize(arrivals, count, interval_s)


def summarize(
    arrivals: list[tuple[int, float]], count: int, interval_s: float
) -> dict[str, object]:
    """Received and lost counts, and the longest gap (ms) between consecutive deliveries.

    A stream whose last datagrams never came counts the missing tail as a gap too (the schedule
    says when they were due), so a tunnel that never recovers cannot look good.
    """
    unique = {sequence for sequence, _ in arrivals}
    if not arrivals:
        return {"received": 0, "lost": count, "max_gap_ms": None}
    times = [at for _, at in arrivals]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    last = max(unique)
    if last < count - 1:
        gaps.append((count - 1 - last) * interval_s)
    longest = max(gaps, default=0.0)
    return {
        "received": len(unique),
        "lost": count - len(unique),
        "max_gap_ms": round(longest * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxify.lab.bench_gap")
    parser.add_argument("role", choices=("send", "receive"))
    parser.add_argument("--host", default="")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    ns = parser.parse_args(argv)
    interval_s = ns.interval_ms / 1000
    if ns.role == "send":
        result: dict[str, object] = dict(send(ns.host, ns.port, ns.count, interval_s))
    else:
        result = receive(ns.port, ns.count, ns.seconds, interval_s)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
