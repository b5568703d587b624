"""gzip (RFC 1952) of IP packets: compress only when strictly smaller, inflate with a hard bound.

The original compressed every packet (about 0.2 ms each) whether it helped or not (reference
§1.4). :class:`CompressionPolicy` tries, and backs off exponentially while the traffic does not
shrink, so incompressible traffic (TLS, video) costs almost nothing.
"""

import zlib

from fluxify.protocol.header import Compression

MAX_INFLATED_SIZE = 1500  # the original's MaxPacketSize: larger output is a gzip bomb
GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip container, not zlib or raw deflate
GZIP_LEVEL = 1  # Go's BestSpeed
MIN_COMPRESSIBLE_SIZE = 128  # below this the 18-byte gzip frame eats any gain (TCP ACKs)
FAILURES_BEFORE_BACKOFF = 4
MAX_BACKOFF_PACKETS = 4096


class InflateError(ValueError):
    """A gzip payload that is corrupt, truncated, trailed by junk or too large once inflated."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def gzip_packet(packet: bytes) -> bytes:
    """One gzip member (mtime 0), as Go's gzip writer produces and reads."""
    return zlib.compress(packet, GZIP_LEVEL, GZIP_WBITS)


def inflate(payload: bytes, limit: int = MAX_INFLATED_SIZE) -> bytes:
    """Inflate one gzip member, never producing more than ``limit + 1`` bytes of output."""
    inflater = zlib.decompressobj(GZIP_WBITS)
    try:
        out = inflater.decompress(payload, limit + 1)
    except zlib.error as exc:
        raise InflateError(f"corrupt gzip stream: {exc}") from exc
    if len(out) > limit:
        raise InflateError(f"gzip inflates beyond {limit} bytes", too_large=True)
    if not inflater.eof:
        raise InflateError("gzip stream is truncated")
    if inflater.unused_data:
        raise InflateError("bytes follow the gzip stream")
    return out


class CompressionPolicy:
    """Per-sender gzip decision with exponential back-off on incompressible traffic.

    Zero state: enabled, no failures, no back-off. After ``FAILURES_BEFORE_BACKOFF`` packets in a
    row that did not shrink, the next ``backoff`` packets are sent as they are without trying;
    each further failure doubles ``backoff`` (up to ``MAX_BACKOFF_PACKETS``); one success resets
    it. Not thread-safe: one per sending session.
    """

    __slots__ = ("attempts", "backoff", "enabled", "failures", "skip", "successes")

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.failures = 0
        self.backoff = 1
        self.skip = 0
        self.attempts = 0
        self.successes = 0

    def encode(self, packet: bytes) -> tuple[bytes, int]:
        """``(payload, compression flag)`` for an IP packet."""
        if not self.enabled or len(packet) < MIN_COMPRESSIBLE_SIZE:
            return packet, Compression.NONE
        if self.skip:
            self.skip -= 1
            return packet, Compression.NONE
        self.attempts += 1
        packed = zlib.compress(packet, GZIP_LEVEL, GZIP_WBITS)
        if len(packed) < len(packet):
            self.successes += 1
            self.failures = 0
            self.backoff = 1
            return packed, Compression.GZIP
        self.failures += 1
        if self.failures >= FAILURES_BEFORE_BACKOFF:
            self.skip = self.backoff
            self.backoff = min(self.backoff * 2, MAX_BACKOFF_PACKETS)
        return packet, Compression.NONE
