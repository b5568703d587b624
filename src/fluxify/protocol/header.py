"""The 22-byte data-plane header of SPEC §2 (v1-compatible) and its codec pair.

``pack_header``/``unpack_header`` are the readable pair; the hot path uses ``HEADER`` (one
preallocated ``struct.Struct``) directly. The header is the AAD of the AEAD seal, so every field,
the compression flag included, is authenticated.
"""

import struct
from enum import IntEnum
from typing import NamedTuple

PROTOCOL_VERSION = 1
HEADER_SIZE = 22
NONCE_SIZE = 12
TAG_SIZE = 16
SESSION_ID_OFFSET = 2
SESSION_ID_SIZE = 4
MIN_DATAGRAM_SIZE = HEADER_SIZE + NONCE_SIZE + TAG_SIZE  # 50: an empty sealed payload
MAX_SEQ = 0xFFFF_FFFF

# version, type, session id, seq, length, reserved[0] (compression), reserved[1] (flags of the
# negotiated extensions, zero towards v1 peers, who ignore it), reserved[2..9] (zero)
HEADER = struct.Struct(">BBIIHBB8x")
SESSION_ID = struct.Struct(">I")
assert HEADER.size == HEADER_SIZE


class PacketType(IntEnum):
    """Datagram types (SPEC §2). 4 is reserved by the original and never sent."""

    IP = 1
    HEARTBEAT = 2
    HANDSHAKE = 3


class Compression(IntEnum):
    """Values of ``reserved[0]``: how the plaintext of an IP packet is encoded."""

    NONE = 0
    GZIP = 1


class HeartbeatFlag(IntEnum):
    """``reserved[1]`` of a heartbeat (extension ``path-probe``; never sent to v1 peers)."""

    PROBE = 1  # the server's own stamp: echo it back on the path it came by
    PROBE_ECHO = 2  # the client returning a PROBE


class Header(NamedTuple):
    version: int
    type: int
    session_id: int
    seq: int
    length: int
    compression: int
    flags: int


def pack_header(
    packet_type: int,
    session_id: int,
    seq: int,
    payload_size: int,
    compression: int = 0,
    *,
    flags: int = 0,
) -> bytes:
    """The header for a sealed plaintext of ``payload_size`` bytes (length = 12 + n + 16)."""
    return HEADER.pack(
        PROTOCOL_VERSION,
        packet_type,
        session_id,
        seq,
        NONCE_SIZE + payload_size + TAG_SIZE,
        compression,
        flags,
    )


def unpack_header(data: bytes | memoryview) -> Header:
    """Parse the first 22 bytes; raises ``ValueError`` when there are fewer."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"a header needs {HEADER_SIZE} bytes, got {len(data)}")
    return Header(*HEADER.unpack_from(data))


def peek_session_id(datagram: bytes | memoryview) -> int:
    """The session id of a datagram, or 0 (never a valid id) when it is too short to be one."""
    if len(datagram) < MIN_DATAGRAM_SIZE:
        return 0
    return int(SESSION_ID.unpack_from(datagram, SESSION_ID_OFFSET)[0])
