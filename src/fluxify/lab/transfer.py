"""A checked bulk TCP transfer for the lab: the sender streams deterministic pseudo-random bytes,
both ends print the byte count and SHA-256 of what they sent or received, so a test can prove a
transfer arrived whole through the tunnel.

``python -m fluxify.lab.transfer receive --port P`` (prints once the sender closes), and
``python -m fluxify.lab.transfer send --host H --port P --bytes N``. Both give up after
``--timeout`` seconds.
"""

import argparse
import hashlib
import json
import random
import socket
import sys
import time

CHUNK_BYTES = 64 * 1024


def receive(port: int, timeout_s: float, host: str = "::") -> dict[str, object]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind((host, port))
        listener.listen(1)
        listener.settimeout(timeout_s)
        print(json.dumps({"listening": port}), flush=True)
        conn, peer = listener.accept()
        deadline = time.monotonic() + timeout_s
        digest = hashlib.sha256()
        total = 0
        with conn:
            while True:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                data = conn.recv(CHUNK_BYTES)
                if not data:
                    break
                digest.update(data)
                total += len(data)
    return {"bytes": total, "sha256": digest.hexdigest(), "peer": str(peer[0])}


def send(host: str, port: int, size: int, timeout_s: float, seed: int = 1) -> dict[str, object]:
    rng = random.Random(seed)
    digest = hashlib.sha256()
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        conn.settimeout(timeout_s)
        remaining = size
        while remaining:
            chunk = rng.randbytes(min(CHUNK_BYTES, remaining))
            conn.sendall(chunk)
            digest.update(chunk)
            remaining -= len(chunk)
    elapsed = time.monotonic() - started
    return {"bytes": size, "sha256": digest.hexdigest(), "seconds": round(elapsed, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxify.lab.transfer")
    sub = parser.add_subparsers(dest="role", required=True)
    rx = sub.add_parser("receive")
    rx.add_argument("--port", type=int, required=True)
    rx.add_argument("--timeout", type=float, default=120.0)
    tx = sub.add_parser("send")
    tx.add_argument("--host", required=True)
    tx.add_argument("--port", type=int, required=True)
    tx.add_argument("--bytes", type=int, required=True)
    tx.add_argument("--timeout", type=float, default=120.0)
    ns = parser.parse_args(argv)
    try:
        if ns.role == "receive":
            result = receive(ns.port, ns.timeout)
        else:
            result = send(ns.host, ns.port, ns.bytes, ns.timeout)
    except OSError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
