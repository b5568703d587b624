"""The kernel's flood filter kept in step with the sessions' confirmed paths (issue 13).

Our nftables table (``linux/nftables.py``, ``FloodFilter``) lets datagrams from the addresses in
its confirmed-path sets pass without limit and rate-limits every other source in the kernel.
This keeps those sets equal to the confirmed paths the data plane's engines hold: the data plane
calls ``changed()`` when a path is confirmed or forgotten and when a session goes; ``run()``
then replaces both sets in one ``nft`` transaction, off the event loop. Changes that come
while one is applied are folded into the next, so there is one ``nft`` process per change
burst, never per packet. Every ``COUNTER_INTERVAL_S`` it reads the filter's drop counters and
compares the sets with the paths again (a change it was not told of gets there that late).

When ``nft`` fails the filter is taken out of the way (its chains emptied, so nothing is limited
that a stale set would wrongly limit), that is logged once, and the server goes on with its
Python checks alone.
"""

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable

from fluxify.errors import HostError
from fluxify.linux import nftables
from fluxify.server.udp_socket import Address

log = logging.getLogger(__name__)

COUNTER_INTERVAL_S = 2.0
COUNTER_PREFIX = "kernel_"  # how the kernel's drop counters show among the server's drops

Path = tuple[str, int]
Apply = Callable[[str], None]  # runs an ``nft -f`` script; raises HostError


def set_element(address: Address) -> Path:
    """The set element of a socket address: v4-mapped back to v4, without a v6 scope."""
    host = address[0].split("%", 1)[0]
    mapped = ipaddress.IPv6Address(host).ipv4_mapped if ":" in host else None
    return (str(mapped) if mapped is not None else host, address[1])


class PathFilter:
    """Mirrors ``paths()`` (the confirmed paths of every live session) into the kernel's sets.

    ``apply`` and ``read_counters`` run ``nft`` (in a worker thread); tests pass their own.
    ``drops()`` holds the kernel's drop counts as last read, named ``kernel_<counter>``.
    Not thread-safe beyond that: one event loop owns it.
    """

    def __init__(
        self,
        paths: Callable[[], Iterable[Address]],
        *,
        table: str = nftables.TABLE,
        netns: str | None = None,
        apply: Apply | None = None,
        read_counters: Callable[[], dict[str, int]] | None = None,
        counter_interval_s: float = COUNTER_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._paths = paths
        self._counter_interval_s = counter_interval_s
        self._table = table
        self._apply: Apply = apply or (lambda script: nftables.apply(script, netns))
        self._read_counters = read_counters or (lambda: nftables.read_counters(table, netns))
        self._clock = clock
        self._wake = asyncio.Event()
        self._applied: frozenset[Path] | None = None
        self._counters: dict[str, int] = {}
        self.enabled = True
        self.syncs = 0  # nft transactions that replaced the sets

    def changed(self) -> None:
        """The confirmed paths may differ from the sets' now; cheap, call it at will."""
        self._wake.set()

    @property
    def applied(self) -> frozenset[Path]:
        """What the kernel's sets hold, as far as we know (empty before the first sync)."""
        return self._applied or frozenset()

    def drops(self) -> dict[str, int]:
        return {COUNTER_PREFIX + name: n for name, n in self._counters.items() if n}

    async def run(self) -> None:
        """Until cancelled or until ``nft`` fails: sync on each change, read the counters."""
        self._wake.set()  # the first pass empties whatever the sets held
        next_counters = self._clock()
        while self.enabled:
            timeout = max(next_counters - self._clock(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            wanted = frozenset(set_element(address) for address in self._paths())
            if wanted != self._applied:
                try:
                    await asyncio.to_thread(self._apply, nftables.render_paths(wanted, self._table))
                except HostError as exc:
                    await self._give_up(exc)
                    return
                self._applied = wanted
                self.syncs += 1
            if self._clock() >= next_counters:
                next_counters = self._clock() + self._counter_interval_s
                try:
                    self._counters = await asyncio.to_thread(self._read_counters)
                except HostError as exc:
                    log.warning("cannot read the kernel flood filter's counters: %s", exc)
                    next_counters = float("inf")  # once; the filter itself goes on

    async def _give_up(self, exc: HostError) -> None:
        self.enabled = False
        log.warning(
            "kernel flood filter off (%s); the server goes on with its own checks alone", exc
        )
        try:
            await asyncio.to_thread(self._apply, nftables.render_filter_off(self._table))
        except HostError as again:
            log.error("could not empty the kernel flood filter either: %s", again)
