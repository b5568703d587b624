"""Reorder buffer: packets of one session that arrive over paths of different delay are released
to the TUN in sequence order, so TCP inside the tunnel sees no reordering (which it would take
for loss: spurious retransmits and a collapsed window).

Numbers are *extended*: :meth:`extend` unwraps the 32-bit wire number (serial arithmetic) into
an unbounded integer near the next expected one; everything else works on those. A packet ahead
of the next expected number is held until one of three facts releases it:

- the gap closes (the missing packets arrive);
- the caller knows the gap was lost (:meth:`release_below`: every path that could have carried
  the missing numbers has since delivered a later one);
- its deadline passes (:meth:`expire`): the caller sets it from the measured delay skew and
  jitter of the paths, so by then the missing packet cannot still be on its way.

A packet behind the next expected number (its gap was given up) is delivered at once: late is
better than never, and the replay window already removed duplicates. Held packets are bounded by
``MAX_HELD_PACKETS``; beyond, the oldest gap is given up. Every operation is O(log n) in the
held packets (two heaps, lazy deletion), never a scan. Zero state: nothing expected yet; the
first packet fixes the starting point, unless ``first`` says which number comes first (a new
session numbers from 1: then packets overtaking number 1 wait for it). Pure and
single-threaded.
"""

import heapq

SEQ_MODULUS = 1 << 32
HALF_SEQ_SPACE = 1 << 31
MAX_HELD_PACKETS = 4096


class ReorderBuffer:
    __slots__ = (
        "_deadlines",
        "_held",
        "_next",
        "_numbers",
        "expired",
        "known_lost",
        "lost",
        "released_late",
        "reordered",
    )

    def __init__(self, first: int | None = None) -> None:
        self._next: int | None = first  # extended number expected next
        self._held: dict[int, bytes] = {}
        self._numbers: list[int] = []  # min-heap of held numbers (stale entries skipped)
        self._deadlines: list[tuple[float, int]] = []  # min-heap of (deadline, number)
        self.reordered = 0  # packets that arrived ahead of a gap and were held
        self.released_late = 0  # packets that arrived after their gap was given up
        self.lost = 0  # numbers given up: never arrived before release
        self.known_lost = 0  # ... of which because every path had passed them
        self.expired = 0  # ... of which because a held packet's deadline passed

    def extend(self, seq: int) -> int:
        """The extended number of wire number ``seq`` (the nearest to the expected one)."""
        expected = self._next
        if expected is None:
            return seq
        offset = (seq - expected) % SEQ_MODULUS
        return expected + offset if offset < HALF_SEQ_SPACE else expected + offset - SEQ_MODULUS

    def push(self, number: int, packet: bytes, deadline: float) -> list[bytes] | None:
        """None: deliver ``packet`` now, alone (the common in-order case, no allocation).

        Otherwise the packets to deliver now, in order (empty: it is held until ``deadline``).
        """
        expected = self._next
        if expected is None or (number == expected and not self._held):
            self._next = number + 1
            return None
        if number < expected:
            self.released_late += 1
            return None
        if number == expected:
            self._next = number + 1
            released = [packet]
            self._run(released)
            return released
        self._held[number] = packet
        heapq.heappush(self._numbers, number)
        heapq.heappush(self._deadlines, (deadline, number))
        self.reordered += 1
        if len(self._held) > MAX_HELD_PACKETS:
            return self._give_up_through(self._lowest_held())
        return []

    def release_below(self, horizon: int) -> list[bytes]:
        """The caller knows no number below ``horizon`` is still on its way: give those gaps up."""
        expected = self._next
        if expected is None or horizon <= expected or not self._held:
            if expected is not None and horizon > expected and not self._held:
                self.lost += horizon - expected
                self._next = horizon
            return []
        lost = self.lost
        released = self._give_up_through(horizon - 1, keep_next=horizon)
        self.known_lost += self.lost - lost
        return released

    def next_deadline(self) -> float | None:
        """When :meth:`expire` must run next, or None when nothing is held."""
        deadlines, held = self._deadlines, self._held
        while deadlines and deadlines[0][1] not in held:
            heapq.heappop(deadlines)
        return deadlines[0][0] if deadlines else None

    def expire(self, now: float) -> list[bytes]:
        """Give up the gaps before every held packet whose deadline passed; return the release."""
        released: list[bytes] = []
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > now:
                return released
            lost = self.lost
            released += self._give_up_through(self._deadlines[0][1])
            self.expired += self.lost - lost

    def flush(self) -> list[bytes]:
        """Everything held, in order, every gap given up (the session is ending)."""
        if not self._held:
            return []
        return self._give_up_through(max(self._held))

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def expected(self) -> int | None:
        return self._next

    def _lowest_held(self) -> int:
        numbers, held = self._numbers, self._held
        while numbers[0] not in held:
            heapq.heappop(numbers)
        return numbers[0]

    def _give_up_through(self, number: int, keep_next: int | None = None) -> list[bytes]:
        """Release every held packet numbered up to ``number`` in order, counting the gaps as
        lost, then the in-order run that follows (from ``keep_next`` if that is later)."""
        expected = self._next
        assert expected is not None
        released: list[bytes] = []
        numbers, held = self._numbers, self._held
        while numbers and numbers[0] <= number:
            lowest = heapq.heappop(numbers)
            packet = held.pop(lowest, None)
            if packet is None:
                continue
            if lowest > expected:
                self.lost += lowest - expected
            released.append(packet)
            expected = lowest + 1
        if keep_next is not None and keep_next > expected:
            self.lost += keep_next - expected
            expected = keep_next
        self._next = expected
        self._run(released)
        return released

    def _run(self, released: list[bytes]) -> None:
        """Append the held packets that now follow in order."""
        held = self._held
        number = self._next
        assert number is not None
        while number in held:
            released.append(held.pop(number))
            number += 1
        self._next = number
        numbers = self._numbers
        while numbers and numbers[0] < number:
            heapq.heappop(numbers)  # released: drop the stale heap entries at once
