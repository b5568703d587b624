"""IP packets into the TUN, counted: what the bond engine releases, in the order it released it.

Both data planes end the same way: the engine hands out in-order packets, they are written at
once. Writes that fail are counted by reason, never raised or logged per packet.
"""

import os

from fluxify.protocol.checksum import complete_checksum
from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.tcp_segment import TCP_CHECK_OFFSET, partial_tcp


class TunWriter:
    """Writes to ``fd``; counts packets written in ``written`` and failures in ``drops``.

    Not thread-safe: one event loop.
    """

    __slots__ = ("drops", "fd", "written")

    def __init__(self, fd: int, drops: DropCounters) -> None:
        self.fd = fd
        self.drops = drops
        self.written = 0

    def write(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except BlockingIOError:
            self.drops.counts[DropReason.QUEUE_FULL] += 1
        except OSError:
            self.drops.counts[DropReason.SEND_FAILED] += 1
        else:
            self.written += 1

    def write_all(self, packets: list[bytes], partial: bool = False) -> None:
        """``partial``: the session may carry TCP packets with partial checksums (feature
        ``csum-partial``); a plain TUN cannot say so to the kernel, so they are finished here."""
        if partial:
            packets = [_completed(packet) for packet in packets]
        write = os.write
        fd = self.fd
        counts = self.drops.counts
        written = 0
        for packet in packets:
            try:
                write(fd, packet)
            except BlockingIOError:
                counts[DropReason.QUEUE_FULL] += 1
            except OSError:
                counts[DropReason.SEND_FAILED] += 1
            else:
                written += 1
        self.written += written


def _completed(packet: bytes) -> bytes:
    """``packet`` with its TCP checksum finished if it holds the pseudo-header sum."""
    l4 = partial_tcp(packet)
    if not l4:
        return packet
    whole = bytearray(packet)
    complete_checksum(whole, l4, TCP_CHECK_OFFSET)
    return bytes(whole)
