"""Received IP packets into the TUN, in sequence order, on one event loop.

Both data planes end the same way: an opened IP packet goes through its session's reorder
buffer (``protocol.reorder``) and whatever the buffer releases is written to the TUN at once.
Packets the buffer holds are released by one timer that ticks every ``REORDER_TICK_S`` while
any buffer holds something, and stops when none does. Writes that fail are counted by reason,
never raised or logged per packet.
"""

import asyncio
import os
import time
from collections.abc import Callable

from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.reorder import ReorderBuffer

REORDER_TICK_S = 0.005  # how often held packets are checked for expiry while any are held


class InOrderTunWriter:
    """Writes to ``fd``; counts packets written in ``written`` and failures in ``drops``.

    Not thread-safe: one event loop. Without an attached loop nothing is released by time (the
    buffers still release in order as packets arrive), which is what unit tests of the data
    planes rely on.
    """

    __slots__ = ("_clock", "_holding", "_loop", "_timer", "drops", "fd", "written")

    def __init__(
        self, fd: int, drops: DropCounters, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fd = fd
        self.drops = drops
        self.written = 0
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._holding: set[ReorderBuffer] = set()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._arm()

    def detach(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def write(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except BlockingIOError:
            self.drops.counts[DropReason.QUEUE_FULL] += 1
        except OSError:
            self.drops.counts[DropReason.SEND_FAILED] += 1
        else:
            self.written += 1

    def deliver(self, buffer: ReorderBuffer, seq: int, packet: bytes, now: float) -> None:
        """Packet number ``seq`` of ``buffer``'s session: written now or when its gap closes."""
        ready = buffer.push(seq, packet, now)
        if ready is None:
            self.write(packet)
            return
        for held in ready:
            self.write(held)
        if buffer.held:
            self._holding.add(buffer)
            self._arm()

    def flush(self, buffer: ReorderBuffer) -> None:
        """Write everything ``buffer`` holds, gaps given up (its session is ending)."""
        for packet in buffer.expire(float("inf")):
            self.write(packet)
        self._holding.discard(buffer)

    def forget(self, buffer: ReorderBuffer) -> None:
        """Stop watching ``buffer`` (its session is gone); what it holds is dropped with it."""
        self._holding.discard(buffer)

    def _arm(self) -> None:
        if self._holding and self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(REORDER_TICK_S, self._release_expired)

    def _release_expired(self) -> None:
        self._timer = None
        now = self._clock()
        for buffer in list(self._holding):
            for packet in buffer.expire(now):
                self.write(packet)
            if not buffer.held:
                self._holding.discard(buffer)
        self._arm()
