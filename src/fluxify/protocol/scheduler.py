"""Which path carries the next packet (ARCHITECTURE: ``Scheduler.pick``).

Two v1 policies. The client spreads its uplink round-robin over alive paths; the server sends a
client's downlink on its lowest-delay fresh path. Both keep the per-packet work to an index or an
attribute read: the expensive decisions are made in :meth:`refresh`, which the owner calls when
liveness changes or on its periodic timer, never per packet.
"""

from collections.abc import Sequence
from typing import Generic, TypeVar

from fluxify.protocol.paths import PathState

P = TypeVar("P", bound=PathState)


class RoundRobin(Generic[P]):
    """Uplink scheduler: each packet on the next alive path. Zero state: no path to use."""

    __slots__ = ("_alive", "_next")

    def __init__(self) -> None:
        self._alive: list[P] = []
        self._next = 0

    def refresh(self, paths: Sequence[P]) -> None:
        self._alive = [p for p in paths if p.alive]

    def pick(self) -> P | None:
        alive = self._alive
        if not alive:
            return None
        index = self._next
        if index >= len(alive):
            index = 0
        self._next = index + 1
        return alive[index]

    @property
    def usable(self) -> int:
        return len(self._alive)


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
