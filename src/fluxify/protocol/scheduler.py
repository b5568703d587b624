"""Which path carries the next packet (ARCHITECTURE: ``Scheduler.pick``).

Two policies. The client spreads its uplink over alive paths by weight; the server sends a
client's downlink on its lowest-delay fresh path. Both keep the per-packet work to an index or an
attribute read: the expensive decisions are made in :meth:`refresh`, which the owner calls when
liveness changes or on its periodic timer, never per packet.
"""

from collections.abc import Sequence
from typing import Generic, TypeVar

from fluxify.protocol.paths import PathState

P = TypeVar("P", bound=PathState)


SCHEDULE_SLOTS = 32  # resolution of weighted round-robin: the lightest path gets >= 1 slot


class RoundRobin(Generic[P]):
    """Uplink scheduler: packets go round a schedule of alive paths, each path appearing in
    proportion to its ``weight`` (interleaved, smooth weighted round-robin). Equal weights give
    plain round-robin. Zero state: no path to use.
    """

    __slots__ = ("_next", "_schedule")

    def __init__(self) -> None:
        self._schedule: list[P] = []
        self._next = 0

    def refresh(self, paths: Sequence[P]) -> None:
        alive = [p for p in paths if p.alive]
        heaviest = max((p.weight for p in alive), default=1.0)
        slots = [max(1, round(SCHEDULE_SLOTS * p.weight / heaviest)) for p in alive]
        self._schedule = _interleave(alive, slots)

    def pick(self) -> P | None:
        schedule = self._schedule
        if not schedule:
            return None
        index = self._next
        if index >= len(schedule):
            index = 0
        self._next = index + 1
        return schedule[index]

    @property
    def usable(self) -> int:
        return len(self._schedule)


def _interleave(paths: list[P], slots: list[int]) -> list[P]:
    """Smooth weighted round-robin order (as nginx does): no long runs on one path."""
    if len(set(slots)) <= 1:
        return paths
    total = sum(slots)
    current = [0] * len(paths)
    order = []
    for _ in range(total):
        for i, weight in enumerate(slots):
            current[i] += weight
        best = max(range(len(paths)), key=current.__getitem__)
        current[best] -= total
        order.append(paths[best])
    return order


class LowestDelay(Generic[P]):
    """Downlink scheduler: the fresh path with the lowest delay estimate.

    A path silent for more than ``stale_after_s`` is skipped; when every path is stale the most
    recently heard one is used (as the original does); with no path at all, None. Ties go to the
    earlier path.
    """

    __slots__ = ("best", "stale_after_s")

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self.best: P | None = None

    def refresh(self, paths: Sequence[P], now: float) -> None:
        fresh = [p for p in paths if p.alive and now - p.last_rx_s <= self.stale_after_s]
        if fresh:
            self.best = min(fresh, key=PathState.rank_delay)
        elif paths:
            self.best = max(paths, key=lambda p: p.last_rx_s)
        else:
            self.best = None
