"""Read moderation: while datagrams stream at link speed in small reads, read on a timer.

A NIC moderates its interrupts for the same reason. At link speed (tens of Mbit/s) datagrams
arrive one by one, and the data plane woke for each one or two; on a VM a wake-up costs several
times the Python work of the datagrams it finds (caches and branch predictors are cold after a
sleep: ~300 µs of CPU per wake-up of the shaped lab server). So while the fds deliver between
``MIN_RATE`` and ``MAX_RATE`` datagrams a second in reads smaller than ``BATCH_TARGET``,
:class:`ModeratedReaders` stops watching them and reads every ``MAX_HOLD_S`` instead, until a
read finds a full batch or nothing (the stream paused). Measured in the lab at 2 x 50 Mbit/s,
this halves the CPU per GB of the receiving process.

What it costs: under load a datagram waits up to ``MAX_HOLD_S`` in its socket (its kernel
arrival stamp, ``rx_timestamps``, still tells the engine when it came), and what the TUN gets
comes in bursts (upload through the shaped lab moved ~2 % less). The first datagram after a
pause is never held, so an idle tunnel's ping is unchanged. Above ``MAX_RATE`` the process is
busy enough that reads find batches on their own, and holds would idle a CPU-bound pipeline
(the unshaped lab moved 12-16 % less with them).

:class:`ReadModeration` is the decision, pure (counts and ``now`` in, a delay out);
:class:`ModeratedReaders` is the thin asyncio adapter the data planes use.
"""

import asyncio
import os
from collections.abc import Callable, Sequence

NO_MODERATION_ENV = "FLUXIFY_NO_MODERATION"  # set to 1: wake at every readable fd (debugging)

MAX_HOLD_S = 0.0005  # how long a datagram may wait for a timed read (1 ms saved no more)
BATCH_TARGET = 16  # a read this large needs no help
MIN_RATE = 2000.0  # datagrams/s (~24 Mbit/s of full ones); slower, a hold gathers hardly any
MAX_RATE = 12000.0  # datagrams/s (~140 Mbit/s); faster, reads batch by themselves (see above)
RATE_WINDOW_S = 0.01  # the arrival rate is measured over windows at least this long
IDLE_GAP_S = 2 * RATE_WINDOW_S  # reads this far apart start a new measurement


def moderation_disabled() -> bool:
    return os.environ.get(NO_MODERATION_ENV, "") not in {"", "0"}


class ReadModeration:
    """Decides after each read whether the next one waits for the fd or for a short timer.

    ``rate`` is the datagrams per second read over the last full window (0 until one is
    complete after a pause). Not thread-safe."""

    __slots__ = ("_count", "_last", "_since", "rate")

    def __init__(self) -> None:
        self.rate = 0.0
        self._count = 0
        self._since = -1.0  # start of the current window; < 0: none yet
        self._last = 0.0  # time of the last read that found something

    def after_read(self, read: int, now: float) -> float | None:
        """``read`` datagrams were read at ``now``. Returns the seconds to wait before reading
        again regardless of the fd, or None: wait until the fd is readable."""
        if read <= 0:
            return None  # the stream paused (or a timed read came just after a drain)
        if self._since < 0 or now - self._last > IDLE_GAP_S:
            self.rate = 0.0
            self._since, self._count = now, 0  # this read's datagrams came before the window
        else:
            self._count += read
            elapsed = now - self._since
            if elapsed >= RATE_WINDOW_S:
                self.rate = self._count / elapsed
                self._since, self._count = now, 0
        self._last = now
        if read >= BATCH_TARGET or not MIN_RATE <= self.rate <= MAX_RATE:
            return None
        return MAX_HOLD_S


class ModeratedReaders:
    """Runs ``drain()`` (which reads every fd of ``fds`` and returns the datagrams it read) when
    one becomes readable, or on the moderation's timer. Not thread-safe: one event loop."""

    __slots__ = ("_drain", "_fds", "_handle", "_loop", "_watching", "enabled", "moderation")

    def __init__(self, fds: Sequence[int], drain: Callable[[], int]) -> None:
        self._fds = list(fds)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._watching = False
        self.moderation = ReadModeration()
        self.enabled = not moderation_disabled()

    @property
    def timed(self) -> bool:
        """Whether the fds are read on the timer now (not watched)."""
        return self._handle is not None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watch()

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._watching and self._loop is not None:
            for fd in self._fds:
                self._loop.remove_reader(fd)
        self._watching = False
        self._loop = None

    def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        for fd in self._fds:
            loop.add_reader(fd, self._on_readable)
        self._watching = True

    def _on_readable(self) -> None:
        self._after(self._drain())

    def _on_timer(self) -> None:
        self._handle = None
        if self._loop is not None:
            self._after(self._drain())

    def _after(self, read: int) -> None:
        loop = self._loop
        if loop is None or not self.enabled:
            return
        hold = self.moderation.after_read(read, loop.time())
        if hold is None:
            if not self._watching:
                self._watch()
            return
        if self._watching:
            for fd in self._fds:
                loop.remove_reader(fd)
            self._watching = False
        self._handle = loop.call_later(hold, self._on_timer)
