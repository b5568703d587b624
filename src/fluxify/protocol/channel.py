"""Frames of the persistent control channel (feature ``rekey``; docs/protocol.md §3.4).

A client whose session negotiated ``rekey`` opens a second mutual-TLS connection to the control
port with the ALPN protocol ``fluxify-channel/1`` and keeps it open for the session's life. Both
directions carry frames: ``type (1) | body length (2, big-endian) | body``. The codec pair is
``encode_frame`` / ``FrameDecoder``; bad frames are :class:`~fluxify.errors.RemoteProtocolError`.
"""

import struct
from dataclasses import dataclass
from enum import IntEnum

from fluxify.errors import RemoteProtocolError
from fluxify.protocol.keys import SALT_SIZE

CHANNEL_ALPN = "fluxify-channel/1"
FRAME_HEADER = struct.Struct(">BH")
FRAME_HEADER_SIZE = FRAME_HEADER.size
MAX_FRAME_BODY = 256  # the largest frame, REKEY, has 36 bytes of body
_U32 = struct.Struct(">I")
_REKEY = struct.Struct(f">I{SALT_SIZE}s")


class FrameType(IntEnum):
    ATTACH = 1  # client -> server: session id (4); the first frame of a channel
    ATTACHED = 2  # server -> client: the newest key epoch of the session (4)
    REKEY = 3  # server -> client: the next epoch (4) and its salt (32)
    REKEY_ACK = 4  # client -> server: epoch (4) installed; the client sends under it already
    REKEY_REQUEST = 5  # client -> server: its send key (epoch, 4) is due for replacement
    GOODBYE = 6  # client -> server: the client stops; free the session now (empty)
    REVOKED = 7  # server -> client: its certificate was revoked, the session ended (empty)


_BODY_SIZE = {
    FrameType.ATTACH: 4,
    FrameType.ATTACHED: 4,
    FrameType.REKEY: _REKEY.size,
    FrameType.REKEY_ACK: 4,
    FrameType.REKEY_REQUEST: 4,
    FrameType.GOODBYE: 0,
    FrameType.REVOKED: 0,
}


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``value`` is the session id or epoch (0 when the type has none)."""

    type: FrameType
    value: int = 0
    salt: bytes = b""

    def __repr__(self) -> str:  # the salt feeds a key: never in a log line
        return f"Frame({self.type.name}, {self.value})"


def encode_frame(frame: Frame) -> bytes:
    if frame.type is FrameType.REKEY:
        body = _REKEY.pack(frame.value, frame.salt)
    elif _BODY_SIZE[frame.type] == 4:
        body = _U32.pack(frame.value)
    else:
        body = b""
    return FRAME_HEADER.pack(int(frame.type), len(body)) + body


class FrameDecoder:
    """Bytes in (any split), frames out. The zero state holds nothing. One per connection."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Every complete frame in what arrived so far; raises RemoteProtocolError on a bad one."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= FRAME_HEADER_SIZE:
            kind, size = FRAME_HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME_BODY:
                raise RemoteProtocolError(
                    f"control channel: a frame of {size} bytes, more than {MAX_FRAME_BODY}"
                )
            if len(self._buffer) < FRAME_HEADER_SIZE + size:
                break
            body = bytes(self._buffer[FRAME_HEADER_SIZE : FRAME_HEADER_SIZE + size])
            del self._buffer[: FRAME_HEADER_SIZE + size]
            frames.append(_decode(kind, body))
        return frames


def _decode(kind: int, body: bytes) -> Frame:
    try:
        frame_type = FrameType(kind)
    except ValueError:
        raise RemoteProtocolError(f"control channel: unknown frame type {kind}") from None
    if len(body) != _BODY_SIZE[frame_type]:
        raise RemoteProtocolError(
            f"control channel: {frame_type.name} has {len(body)} bytes of body, "
            f"expected {_BODY_SIZE[frame_type]}"
        )
    if frame_type is FrameType.REKEY:
        epoch, salt = _REKEY.unpack(body)
        return Frame(frame_type, epoch, salt)
    if len(body) == 4:
        return Frame(frame_type, _U32.unpack(body)[0])
    return Frame(frame_type)
