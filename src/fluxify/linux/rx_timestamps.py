"""Kernel receive timestamps of UDP datagrams (``SO_TIMESTAMPNS``), on the monotonic clock.

A one-way delay measured when the process gets round to reading a datagram includes the time
it waited in the socket buffer: on a busy receiver that is tens of milliseconds, the same for
every path, and the bond engine would take it for queueing in the links. The kernel stamps each
datagram when it arrives; the stamp is wall-clock time, turned into the engine's monotonic time
with an offset sampled once per batch.
"""

import socket
import struct
import time

SO_TIMESTAMPNS = 35  # asm-generic/socket.h (64-bit timespec on x86_64 and arm64); the cmsg
SCM_TIMESTAMPNS = SO_TIMESTAMPNS  # type of the ancillary message carrying it is the same
TIMESPEC = struct.Struct("=qq")
TIMESTAMP_SPACE = socket.CMSG_SPACE(TIMESPEC.size)


def enable(sock: socket.socket) -> bool:
    """Ask for receive timestamps on ``sock``; False where the kernel refuses (no stamps then)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def wall_minus_monotonic() -> float:
    """Offset that turns a wall-clock time into ``time.monotonic()`` time (subtract it)."""
    return time.time() - time.monotonic()


def arrival(ancdata: list[tuple[int, int, bytes]], offset: float) -> float | None:
    """The monotonic arrival time in a datagram's ancillary data, or None without a stamp."""
    for level, kind, data in ancdata:
        if kind == SCM_TIMESTAMPNS and level == socket.SOL_SOCKET and len(data) >= TIMESPEC.size:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            return float(seconds + nanoseconds * 1e-9 - offset)
    return None
