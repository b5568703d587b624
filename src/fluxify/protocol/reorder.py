"""Reorder buffer: packets of one session that arrive over paths of different delay are released
to the TUN in sequence order, so TCP inside the tunnel sees no reordering (which it would take
for loss: spurious retransmits and a collapsed window).

A packet ahead of the next expected number waits at most ``hold_s``; when the oldest waiting
packet has waited that long, the gap before it is given up (the packet was lost) and delivery
goes on. A packet behind the next expected number (it arrived after its gap was given up) is
delivered at once: late is better than never, and the replay window already removed duplicates.
Sequence numbers wrap at 2^32 (serial arithmetic); the sender skips 0 at the wrap, which costs
one hold time every 4 billion packets. Zero state: nothing expected yet; the first packet
fixes the starting point. Pure and single-threaded: time comes in as ``now``.
"""

from collections import deque

SEQ_MODULUS = 1 << 32
HALF_SEQ_SPACE = 1 << 31
MAX_HELD_PACKETS = 2048
DEFAULT_HOLD_S = 0.050


class ReorderBuffer:
    __slots__ = ("_arrivals", "_held", "_next", "hold_s", "released_late", "skipped_gaps")

    def __init__(self, hold_s: float = DEFAULT_HOLD_S) -> None:
        self.hold_s = hold_s
        self._next: int | None = None  # extended (unwrapped) number expected next
        self._held: dict[int, bytes] = {}  # extended number -> packet
        self._arrivals: deque[tuple[float, int]] = deque()  # (arrival, number), arrival order
        self.skipped_gaps = 0
        self.released_late = 0

    def push(self, seq: int, packet: bytes, now: float) -> list[bytes] | None:
        """None: deliver ``packet`` now, alone (the common in-order case, no allocation).

        Otherwise the list of packets to deliver now, in order (possibly empty: it was held).
        """
        expected = self._next
        if expected is None:
            self._next = seq + 1
            return None
        offset = (seq - expected) % SEQ_MODULUS
        if offset == 0 and not self._held:
            self._next = expected + 1
            return None
        if offset >= HALF_SEQ_SPACE:
            self.released_late += 1
            return None
        number = expected + offset
        self._held[number] = packet
        self._arrivals.append((now, number))
        if len(self._held) > MAX_HELD_PACKETS:
            return self._skip_to_oldest()
        return self._release_run()

    def deadline(self) -> float | None:
        """When :meth:`expire` must run next, or None when nothing is held."""
        arrivals, held = self._arrivals, self._held
        while arrivals and arrivals[0][1] not in held:
            arrivals.popleft()  # already released
        return arrivals[0][0] + self.hold_s if arrivals else None

    def expire(self, now: float) -> list[bytes]:
        """Give up gaps whose oldest waiting packet waited ``hold_s``; return what is released."""
        released: list[bytes] = []
        while True:
            deadline = self.deadline()
            if deadline is None or deadline > now:
                return released
            released += self._skip_to(self._arrivals[0][1])

    @property
    def held(self) -> int:
        return len(self._held)

    def _skip_to_oldest(self) -> list[bytes]:
        return self._skip_to(min(self._held))

    def _skip_to(self, number: int) -> list[bytes]:
        """Give up every gap below ``number`` and release the in-order run from the lowest held."""
        assert self._next is not None
        lowest = min(n for n in self._held if n <= number)
        if lowest > self._next:
            self.skipped_gaps += 1
        self._next = lowest
        return self._release_run()

    def _release_run(self) -> list[bytes]:
        released = []
        held = self._held
        number = self._next
        assert number is not None
        while number in held:
            released.append(held.pop(number))
            number += 1
        self._next = number
        return released
