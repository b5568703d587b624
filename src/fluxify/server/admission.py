"""Who may hold a control connection: caps in total and per source, a rate of new connections
per source, and a count of refusals.

Pure bookkeeping, no I/O and no clock reads (``now`` comes in). Not safe to share between
threads: the control server's own event loop owns it. Sources are IPv4 addresses and IPv6 /64
prefixes (one host usually holds a whole /64, so counting single v6 addresses would not cap it).

The rate is a token bucket per source, checked right after ``accept`` and before any TLS work,
so a handshake flood from one address costs the server an accept and a close per connection,
not a handshake. Its defaults leave room for a NAT in front of several clients: each client
opens one connection per session (two with the ``rekey`` channel) and retries after a failure,
so a burst of 40 lets ~20 clients behind one address start at once and 10/s refills it.
"""

import ipaddress
from collections import Counter
from enum import Enum

DEFAULT_MAX_CONNECTIONS = 512  # well below the usual 1 024-descriptor soft limit
DEFAULT_MAX_PER_SOURCE = 32  # a NAT in front of several clients still fits
DEFAULT_NEW_PER_SOURCE_PER_S = 10.0  # new connections per second per source, sustained ...
DEFAULT_NEW_PER_SOURCE_BURST = 40.0  # ... and at once (see above)
RATE_FORGET_EVERY_S = 10.0  # buckets full again (idle sources) are dropped this often
IPV6_SOURCE_PREFIX = 64


class ConnectionOutcome(Enum):
    """What happened to a control connection that got no session, for the periodic summary."""

    OVER_GLOBAL_CAP = "over the cap on all connections"
    OVER_SOURCE_CAP = "over the cap per source address"
    OVER_SOURCE_RATE = "over the rate of new connections per source address"
    HANDSHAKE_FAILED = "TLS handshake failed"
    HANDSHAKE_TIMEOUT = "no TLS handshake in time"
    CONNECTION_FAILED = "connection failed"
    ACCEPT_FAILED = "accept failed (out of descriptors or memory)"


def source_of(host: str) -> str:
    """The key a connection from ``host`` counts under: the v4 address, or the v6 /64."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # a v4 client on a dual-stack socket
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/{IPV6_SOURCE_PREFIX}", strict=False))
    return str(address)


class Admission:
    """Open control connections, counted in total and per source; refusals tallied by outcome.

    ``admit(source, now)`` either counts the connection (then ``release(source)`` must follow
    once) or returns why it was refused; an admitted connection takes a token of its source's
    bucket (``new_per_source_per_s``, ``new_per_source_burst``), a refused one none.
    ``summary(now)`` returns the tallies since the last summary at most once per
    ``summary_interval_s``, and only when there is something new.
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_per_source: int = DEFAULT_MAX_PER_SOURCE,
        new_per_source_per_s: float = DEFAULT_NEW_PER_SOURCE_PER_S,
        new_per_source_burst: float = DEFAULT_NEW_PER_SOURCE_BURST,
        summary_interval_s: float = 30.0,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.new_per_source_per_s = new_per_source_per_s
        self.new_per_source_burst = max(new_per_source_burst, 1.0)
        self.summary_interval_s = summary_interval_s
        self.open = 0
        self.totals: Counter[ConnectionOutcome] = Counter()
        self._per_source: Counter[str] = Counter()
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, as of when)
        self._next_forget = 0.0
        self._pending: Counter[ConnectionOutcome] = Counter()
        self._next_summary = 0.0

    def admit(self, source: str, now: float) -> ConnectionOutcome | None:
        if self.open >= self.max_connections:
            self.count(ConnectionOutcome.OVER_GLOBAL_CAP)
            return ConnectionOutcome.OVER_GLOBAL_CAP
        if self._per_source[source] >= self.max_per_source:
            self.count(ConnectionOutcome.OVER_SOURCE_CAP)
            return ConnectionOutcome.OVER_SOURCE_CAP
        tokens = self._tokens(source, now)
        if tokens < 1.0:
            self.count(ConnectionOutcome.OVER_SOURCE_RATE)
            return ConnectionOutcome.OVER_SOURCE_RATE
        self._buckets[source] = (tokens - 1.0, now)
        self.open += 1
        self._per_source[source] += 1
        return None

    def _tokens(self, source: str, now: float) -> float:
        """The tokens ``source``'s bucket holds at ``now``; buckets of idle sources (full again)
        are forgotten every ``RATE_FORGET_EVERY_S``, so the table holds recent sources only."""
        if now >= self._next_forget:
            self._next_forget = now + RATE_FORGET_EVERY_S
            self._buckets = {
                s: (t, at)
                for s, (t, at) in self._buckets.items()
                if self._refill(t, at, now) < self.new_per_source_burst
            }
        bucket = self._buckets.get(source)
        if bucket is None:
            return self.new_per_source_burst
        return self._refill(*bucket, now)

    def _refill(self, tokens: float, at: float, now: float) -> float:
        return min(self.new_per_source_burst, tokens + (now - at) * self.new_per_source_per_s)

    def tracked_sources(self) -> int:
        """How many sources' rate buckets are held (for tests and stats)."""
        return len(self._buckets)

    def release(self, source: str) -> None:
        self.open -= 1
        self._per_source[source] -= 1
        if self._per_source[source] <= 0:
            del self._per_source[source]

    def from_source(self, source: str) -> int:
        return self._per_source[source]

    def count(self, outcome: ConnectionOutcome) -> None:
        self.totals[outcome] += 1
        self._pending[outcome] += 1

    def summary(self, now: float) -> str | None:
        """One line on the refusals since the last summary; None if nothing new or too soon."""
        if not self._pending or now < self._next_summary:
            return None
        self._next_summary = now + self.summary_interval_s
        parts = [f"{n} {outcome.value}" for outcome, n in self._pending.most_common()]
        self._pending.clear()
        return f"connections without a session: {', '.join(parts)} ({self.open} open now)"
