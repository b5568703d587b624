"""``fluxify-bench codec``: CPU cost of the protocol core per packet, beside the original's way.

Measures, in one process and one run, seal and open of an IP packet through ``DataSession``
(incompressible and compressible payloads) and the same work done the way Go Fluxify v1 did it
(a new cipher object per packet, gzip tried on every packet, one ``getrandom`` per nonce). Prints
a table, writes ``PREFIX.json`` and, when matplotlib is installed, ``PREFIX.png``.
"""

import json
import os
import random
import statistics
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fluxify.protocol.header import HEADER, PROTOCOL_VERSION, Compression, PacketType
from fluxify.protocol.session import DataSession

ROUNDS = 5  # each figure is the median of this many timed rounds
BENCH_SESSION_ID = 0x0BE7C4


@dataclass(frozen=True)
class CodecResult:
    name: str
    us_per_packet: float
    packets_per_s: float


def ipv4_packet(size: int, *, compressible: bool, rng: random.Random) -> bytes:
    """An IPv4/UDP-shaped packet of ``size`` bytes with a random or a repetitive payload."""
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, size, 1, 0, 64, 17, 0, b"\n\x08\0\2", b"\xc6\x13\0\1"
    )
    body_size = size - len(header)
    if compressible:
        body = (b"GET /index.html HTTP/1.1\r\nHost: example\r\n" * (body_size // 40 + 1))[
            :body_size
        ]
    else:
        body = rng.randbytes(body_size)
    return header + body


def _time_per_packet(work: Callable[[], object], packets: int) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(packets):
            work()
        samples.append((time.perf_counter() - start) / packets)
    return statistics.median(samples) * 1e6


def _v1_original_seal(key: bytes, packet: bytes) -> bytes:
    """Go Fluxify v1's per-packet uplink work: gzip always, new cipher, fresh getrandom nonce."""
    payload, flag = packet, Compression.NONE
    packed = zlib.compress(packet, 1, 31)
    if len(packed) < len(packet):
        payload, flag = packed, Compression.GZIP
    header = HEADER.pack(
        PROTOCOL_VERSION, PacketType.IP, BENCH_SESSION_ID, 1, len(payload) + 28, flag, 0
    )
    nonce = os.urandom(12)
    return header + nonce + AESGCM(key).encrypt(nonce, payload, header)


def _v1_original_open(key: bytes, datagram: bytes) -> bytes:
    plaintext = AESGCM(key).decrypt(datagram[22:34], datagram[34:], datagram[:22])
    return zlib.decompress(plaintext, 31) if datagram[12] == Compression.GZIP else plaintext


def measure(packets: int, size: int) -> list[CodecResult]:
    rng = random.Random(1)
    key = rng.randbytes(32)
    results = []
    for label, compressible in (("incompressible", False), ("compressible", True)):
        packet = ipv4_packet(size, compressible=compressible, rng=rng)
        sender = DataSession(BENCH_SESSION_ID, key)
        receiver = DataSession(BENCH_SESSION_ID, key)
        datagrams = [sender.seal_ip(packet) for _ in range(packets * ROUNDS)]
        sealed = iter(datagrams)
        original_datagram = _v1_original_seal(key, packet)

        def seal(s: DataSession = sender, p: bytes = packet) -> object:
            return s.seal_ip(p)

        def open_(r: DataSession = receiver, it: Iterator[bytes | None] = sealed) -> object:
            return r.open(next(it) or b"")

        def original_seal(p: bytes = packet) -> object:
            return _v1_original_seal(key, p)

        def original_open(d: bytes = original_datagram) -> object:
            return _v1_original_open(key, d)

        cases: list[tuple[str, Callable[[], object]]] = [
            (f"fluxify seal {label}", seal),
            (f"fluxify open {label}", open_),
            (f"go-v1 way seal {label}", original_seal),
            (f"go-v1 way open {label}", original_open),
        ]
        for name, work in cases:
            us = _time_per_packet(work, packets)
            results.append(CodecResult(name, round(us, 3), round(1e6 / us)))
        if receiver.drops.total():
            raise RuntimeError(f"benchmark datagrams were dropped: {receiver.drops.snapshot()}")
    return results


def run_codec_bench(*, packets: int, size: int, out: Path) -> int:
    if not 64 <= size <= 1400:
        raise SystemExit("fluxify-bench: --size: expected 64..1400 bytes")
    if packets < 100:
        raise SystemExit("fluxify-bench: --packets: expected at least 100")
    print(f"codec benchmark: {size}-byte IPv4 packets, median of {ROUNDS} x {packets} packets")
    results = measure(packets, size)
    by_name = {r.name: r for r in results}
    print(f"{'case':<36}{'µs/packet':>12}{'packets/s':>14}{'vs go-v1 way':>14}")
    for r in results:
        twin = by_name.get(r.name.replace("fluxify", "go-v1 way"))
        ratio = f"{twin.us_per_packet / r.us_per_packet:.1f}x" if twin and twin is not r else ""
        print(f"{r.name:<36}{r.us_per_packet:>12.2f}{r.packets_per_s:>14,.0f}{ratio:>14}")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "size_bytes": size,
        "packets": packets,
        "rounds": ROUNDS,
        "results": [asdict(r) for r in results],
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.with_suffix('.json')}")
    _plot(results, out.with_suffix(".png"), size)
    return 0


def _plot(results: list[CodecResult], path: Path, size: int) -> None:
    try:
        import matplotlib  # noqa: PLC0415 - optional, only for the picture

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib is not installed: no PNG written (pip install 'fluxify[bench]')")
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [r.name for r in results]
    colors = ["tab:blue" if n.startswith("fluxify") else "tab:gray" for n in names]
    ax.barh(names, [r.us_per_packet for r in results], color=colors)
    ax.invert_yaxis()
    ax.set_xlabel(f"µs per {size}-byte packet (lower is better)")
    ax.set_title("Fluxify protocol core vs the Go v1 way, same process, same run")
    for i, r in enumerate(results):
        ax.text(r.us_per_packet, i, f" {r.us_per_packet:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")
