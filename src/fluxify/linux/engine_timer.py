"""One event-loop timer for many bond engines: each engine's ``next_timer()`` in a heap.

The data planes call :meth:`EngineTimers.arm` after every exchange with an engine; the timer
fires at the earliest deadline and runs ``on_due(key)`` for every engine whose deadline passed.
Stale heap entries (an engine that re-armed later, or is gone) are skipped, so arming is
O(log n) and nothing polls.
"""

import asyncio
import heapq
from collections.abc import Callable, Hashable

_INF = float("inf")


class EngineTimers:
    """Not thread-safe: one event loop. Without an attached loop nothing fires (unit tests)."""

    __slots__ = ("_armed", "_handle", "_handle_at", "_heap", "_loop", "_on_due")

    def __init__(self, on_due: Callable[[Hashable], None]) -> None:
        self._on_due = on_due
        self._heap: list[tuple[float, int, Hashable]] = []
        self._armed: dict[Hashable, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = _INF

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._rearm()

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._handle_at = _INF
        self._loop = None

    def arm(self, key: Hashable, deadline: float | None) -> None:
        """``key``'s engine wants ``on_timer`` at ``deadline`` (None: nothing pending)."""
        if deadline is None:
            return
        if self._armed.get(key, _INF) <= deadline:
            return  # an earlier wake-up is already due; it re-arms from the engine then
        self._armed[key] = deadline
        heapq.heappush(self._heap, (deadline, id(key), key))
        if deadline < self._handle_at:
            self._rearm()

    def forget(self, key: Hashable) -> None:
        self._armed.pop(key, None)

    def _rearm(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._handle_at = _INF
        if self._heap:
            self._handle_at = self._heap[0][0]
            self._handle = loop.call_at(self._handle_at, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._handle_at = _INF
        assert self._loop is not None
        now = self._loop.time()
        heap, armed = self._heap, self._armed
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            if armed.get(key) != deadline:
                continue  # stale
            del armed[key]
            self._on_due(key)
        self._rearm()
