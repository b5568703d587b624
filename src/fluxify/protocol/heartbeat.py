"""Heartbeat payloads (SPEC §2): an int64 big-endian of wall-clock nanoseconds, echoed as is.

The client stamps, the server echoes the same bytes on the path they came from, and the client
computes the round trip with its own clock. Handshakes (type 3) carry no payload.
Between bond-v2 peers heartbeats keep this payload; what each side received per path travels
in feedback packets instead (``protocol.feedback``).
"""

import struct

HEARTBEAT = struct.Struct(">q")
HEARTBEAT_PAYLOAD_SIZE = 8
HANDSHAKE_PAYLOAD = b""
V1_HEARTBEAT_INTERVAL_S = 2.0  # what a Go v1 peer sends and expects
PATH_STALE_AFTER_S = 5.0  # a Go server stops using a path silent for longer


def pack_heartbeat(now_ns: int) -> bytes:
    return HEARTBEAT.pack(now_ns)


def unpack_heartbeat(payload: bytes) -> int | None:
    """The timestamp in a heartbeat or its echo, or None when the payload is not 8 bytes."""
    if len(payload) != HEARTBEAT_PAYLOAD_SIZE:
        return None
    return int(HEARTBEAT.unpack(payload)[0])


def round_trip_ns(echo_payload: bytes, now_ns: int) -> int | None:
    """RTT from an echoed heartbeat, or None when it is malformed or from the future."""
    sent_ns = unpack_heartbeat(echo_payload)
    if sent_ns is None or sent_ns > now_ns:
        return None
    return now_ns - sent_ns
