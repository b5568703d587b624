"""Heartbeat payloads (SPEC §2): an int64 big-endian of wall-clock nanoseconds, echoed as is.

The client stamps, the server echoes the same bytes on the path they came from, and the client
computes the round trip with its own clock. Handshakes (type 3) carry no payload.

Between peers that negotiated ``rate-report`` (SPEC §5), the client's heartbeats and the server's
probes carry a second field: a uint64 big-endian count of the bytes the sender has received on
that path so far, from which the peer learns each path's delivered rate. The echo returns all
16 bytes; only the stamp is read from it.
"""

import struct

HEARTBEAT = struct.Struct(">q")
HEARTBEAT_PAYLOAD_SIZE = 8
RATE_REPORT = struct.Struct(">qQ")
RATE_REPORT_PAYLOAD_SIZE = 16
COUNTER_MODULUS = 1 << 64
HANDSHAKE_PAYLOAD = b""
V1_HEARTBEAT_INTERVAL_S = 2.0  # what a Go v1 peer sends and expects
PATH_STALE_AFTER_S = 5.0  # a Go server stops using a path silent for longer


def pack_heartbeat(now_ns: int, received_bytes: int | None = None) -> bytes:
    """A v1 heartbeat, or with ``received_bytes`` (wrapping at 2^64) a rate-report one."""
    if received_bytes is None:
        return HEARTBEAT.pack(now_ns)
    return RATE_REPORT.pack(now_ns, received_bytes % COUNTER_MODULUS)


def unpack_heartbeat(payload: bytes) -> int | None:
    """The timestamp in a heartbeat or its echo, or None when the payload is neither size."""
    if len(payload) not in (HEARTBEAT_PAYLOAD_SIZE, RATE_REPORT_PAYLOAD_SIZE):
        return None
    return int(HEARTBEAT.unpack_from(payload)[0])


def unpack_received_bytes(payload: bytes) -> int | None:
    """The peer's received-bytes counter of a rate-report heartbeat, or None without one."""
    if len(payload) != RATE_REPORT_PAYLOAD_SIZE:
        return None
    return int(RATE_REPORT.unpack(payload)[1])


def round_trip_ns(echo_payload: bytes, now_ns: int) -> int | None:
    """RTT from an echoed heartbeat, or None when it is malformed or from the future."""
    sent_ns = unpack_heartbeat(echo_payload)
    if sent_ns is None or sent_ns > now_ns:
        return None
    return now_ns - sent_ns
