"""Who may hold a control connection: caps in total and per source, and a count of refusals.

Pure bookkeeping, no I/O and no clock reads (``now`` comes in). Not safe to share between
threads: the control server's own event loop owns it. Sources are IPv4 addresses and IPv6 /64
prefixes (one host usually holds a whole /64, so counting single v6 addresses would not cap it).
"""

import ipaddress
from collections import Counter
from enum import Enum

DEFAULT_MAX_CONNECTIONS = 512  # well below the usual 1 024-descriptor soft limit
DEFAULT_MAX_PER_SOURCE = 32  # a NAT in front of several clients still fits
IPV6_SOURCE_PREFIX = 64


class ConnectionOutcome(Enum):
    """What happened to a control connection that got no session, for the periodic summary."""

    OVER_GLOBAL_CAP = "over the cap on all connections"
    OVER_SOURCE_CAP = "over the cap per source address"
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

    ``admit(source)`` either counts the connection (then ``release(source)`` must follow once)
    or returns why it was refused. ``summary(now)`` returns the tallies since the last summary
    at most once per ``summary_interval_s``, and only when there is something new.
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_per_source: int = DEFAULT_MAX_PER_SOURCE,
        summary_interval_s: float = 30.0,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.summary_interval_s = summary_interval_s
        self.open = 0
        self.totals: Counter[ConnectionOutcome] = Counter()
        self._per_source: Counter[str] = Counter()
        self._pending: Counter[ConnectionOutcome] = Counter()
        self._next_summary = 0.0

    def admit(self, source: str) -> ConnectionOutcome | None:
        if self.open >= self.max_connections:
            self.count(ConnectionOutcome.OVER_GLOBAL_CAP)
            return ConnectionOutcome.OVER_GLOBAL_CAP
        if self._per_source[source] >= self.max_per_source:
            self.count(ConnectionOutcome.OVER_SOURCE_CAP)
            return ConnectionOutcome.OVER_SOURCE_CAP
        self.open += 1
        self._per_source[source] += 1
        return None

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
