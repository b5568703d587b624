"""The 22-byte data-plane header of SPEC §2 (v1-compatible) and its codec pair.

``pack_header``/``unpack_header`` are the readable pair; the hot path uses ``HEADER`` (one
preallocated ``struct.Struct``) directly. The header is the AAD of the AEAD seal, so every field,
the compression flag and the bond-v2 fields included, is authenticated.

The v2 extension (feature ``bond-v2``, docs/bond-engine.md) fills the reserved bytes a v1 peer
ignores: ``reserved[1]`` flags, ``reserved[2..5]`` the path word (the sender's path id in the top
8 bits, that path's own 24-bit sequence number below), ``reserved[6..9]`` the send time in
microseconds of the sender's monotonic clock, modulo 2^32. Towards a v1 peer all three are zero.
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

PATH_ID_SHIFT = 24
PATH_SEQ_MASK = 0xFF_FFFF  # per-path sequence numbers wrap at 2^24
MAX_PATH_ID = 0xFF
SEND_TIME_MASK = 0xFFFF_FFFF  # microseconds, wrapping every ~71 minutes

# version, type, session id, seq, length, reserved[0] (compression), reserved[1] (flags),
# reserved[2..5] (path word), reserved[6..9] (send time, µs). v1: the last three are zero.
HEADER = struct.Struct(">BBIIHBBII")
SESSION_ID = struct.Struct(">I")
assert HEADER.size == HEADER_SIZE


class PacketType(IntEnum):
    """Datagram types (SPEC §2). 4 is reserved by the original and never sent."""

    IP = 1
    HEARTBEAT = 2
    HANDSHAKE = 3
    FEEDBACK = 5  # bond-v2 only: what the sender of it received, per path (protocol.feedback)


class Compression(IntEnum):
    """Values of ``reserved[0]``: how the plaintext of an IP packet is encoded."""

    NONE = 0
    GZIP = 1


class HeaderFlag(IntEnum):
    """Bits of ``reserved[1]`` (feature ``bond-v2``; always zero towards v1 peers)."""

    PATH_FIELDS = 1  # the path word and send time are set
    BACKUP = 2  # sent on a path its owner marked ``backup`` (carry data only when needed)
    ECHO = 4  # a heartbeat that answers the peer's heartbeat (same payload)
    DUPLICATED = 8  # an IP packet sent on two paths: the second copy is no replay
    KEY_PHASE = 16  # feature ``rekey``: the parity of the key epoch that sealed it (docs/keys.md)


class Header(NamedTuple):
    version: int
    type: int
    session_id: int
    seq: int
    length: int
    compression: int
    flags: int
    path_word: int = 0
    send_us: int = 0


def pack_header(
    packet_type: int,
    session_id: int,
    seq: int,
    payload_size: int,
    compression: int = 0,
    *,
    flags: int = 0,
    path_word: int = 0,
    send_us: int = 0,
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
        path_word,
        send_us,
    )


def path_word(path_id: int, path_seq: int) -> int:
    """The v2 path word: ``path_id`` (0..255) above the low 24 bits of ``path_seq``."""
    return (path_id << PATH_ID_SHIFT) | (path_seq & PATH_SEQ_MASK)


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
