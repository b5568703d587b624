"""Why a datagram was dropped, and the counters the data plane keeps per reason.

Bad input on the UDP data plane is never raised and never logged per packet: it is counted here,
and logs and metrics read snapshots of the counters.
"""

from enum import IntEnum


class DropReason(IntEnum):
    TOO_SHORT = 0  # shorter than header + nonce + tag (50 bytes)
    LENGTH_MISMATCH = 1  # header length != bytes after the header
    BAD_VERSION = 2  # version byte is not 1
    UNKNOWN_SESSION = 3  # no session with this id
    BAD_TAG = 4  # AES-GCM authentication failed
    REPLAY = 5  # seq already seen or older than the replay window
    EMPTY_IP = 6  # IP packet with an empty payload (it crashed the Go server)
    NOT_IP = 7  # payload is not an IPv4/IPv6 packet
    BAD_GZIP = 8  # gzip stream corrupt or truncated, or unknown compression flag
    INFLATE_LIMIT = 9  # gzip would inflate beyond 1500 bytes (a gzip bomb)
    UNKNOWN_TYPE = 10  # authenticated, but a packet type we do not handle
    SPOOFED_SOURCE = 11  # inner source address is not the session's own
    NO_PATH = 12  # nothing alive to send on
    QUEUE_FULL = 13  # the TUN or a socket would block: its queue is full
    UNKNOWN_DESTINATION = 14  # a TUN packet for an inner address no session holds
    SEND_FAILED = 15  # the kernel refused a datagram (no route, interface down, ...)
    NOT_TUNNELED = 16  # a TUN packet that does not belong in the tunnel (link-local chatter)
    CONTROL_REPLAY = 17  # bond-v2 control packet unnumbered, already seen or too old
    FOREIGN_SOURCE = 18  # a datagram from an address that is not the session's peer
    MALFORMED_CONTROL = 19  # an authenticated control packet whose payload does not parse
    DUPLICATE = 20  # the second copy of a packet the peer sent on two paths (bond-v2)
    UNKNOWN_SOURCE_BUDGET = 21  # from an address not (yet) a path, over its decryption budget
    STALE_HEARTBEAT = 22  # a v1 heartbeat whose stamp is too far from now or not newer
    PATH_LIMIT = 23  # a new path while every path slot holds a fresh path
    UNKNOWN_KEY = 24  # feature rekey: no key of that key phase is accepted (retired or not yet)
    KEY_EXHAUSTED = 25  # not sent: the send key sealed its limit and no new epoch came in time
    SESSION_BUDGET = 26  # server: over the session's share of a full read shared with others
    BAD_SUPER_PACKET = 27  # a TUN read whose virtio-net header does not fit its packet


class DropCounters:
    """One integer per :class:`DropReason`, incremented in place on the hot path.

    The zero state counts nothing. Not thread-safe; each event loop owns its counters.
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = [0] * len(DropReason)

    def add(self, reason: DropReason) -> None:
        self.counts[reason] += 1

    def __getitem__(self, reason: DropReason) -> int:
        return self.counts[reason]

    def total(self) -> int:
        return sum(self.counts)

    def snapshot(self) -> dict[str, int]:
        """Non-zero counts by lower-case reason name, for logs, stats and metrics."""
        return {r.name.lower(): self.counts[r] for r in DropReason if self.counts[r]}
