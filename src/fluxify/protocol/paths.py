"""Per-path state of a session: liveness, delay estimate and traffic counters.

A path is one way between client and server: on the client one uplink socket, on the server one
client source address. Counters are plain integers updated in place on the hot path; the TUI,
logs and metrics read :meth:`PathState.snapshot`. Time is always passed in (seconds, monotonic).
"""

from dataclasses import dataclass

RTT_GAIN = 0.125  # RFC 6298 smoothing of the round-trip estimate
UNKNOWN_DELAY_PENALTY_S = 0.5  # the original ranks paths without an estimate as 500 ms


@dataclass(frozen=True)
class PathSnapshot:
    """A copy of a path's state for display; safe to hand to another thread."""

    label: str
    alive: bool
    rtt_ms: float | None
    weight: float
    idle_s: float
    tx_packets: int
    tx_bytes: int
    rx_packets: int
    rx_bytes: int


class PathState:
    """State of one path. Zero state: alive, never heard from, no delay estimate.

    ``last_rx_s`` starts at creation time so that a new path gets a full liveness interval
    before it can be declared dead. ``delay_s`` is a smoothed delay used to rank paths: the
    client's true round trip, or on the server a one-way delay that includes the client's clock
    offset (identical for every path of one client, so the ranking is still right).
    """

    __slots__ = (
        "alive",
        "delay_s",
        "label",
        "last_rx_s",
        "rx_bytes",
        "rx_packets",
        "tx_bytes",
        "tx_packets",
        "weight",
    )

    def __init__(self, label: str, now: float) -> None:
        self.label = label
        self.alive = True
        self.delay_s: float | None = None
        self.weight = 1.0  # share of traffic relative to the other paths (see pathweights)
        self.last_rx_s = now
        self.tx_packets = 0
        self.tx_bytes = 0
        self.rx_packets = 0
        self.rx_bytes = 0

    def heard(self, size: int, now: float) -> None:
        """An authenticated datagram of ``size`` bytes arrived on this path."""
        self.rx_packets += 1
        self.rx_bytes += size
        self.last_rx_s = now

    def sent(self, size: int) -> None:
        self.tx_packets += 1
        self.tx_bytes += size

    def add_delay_sample(self, sample_s: float) -> None:
        if self.delay_s is None:
            self.delay_s = sample_s
        else:
            self.delay_s += RTT_GAIN * (sample_s - self.delay_s)

    def rank_delay(self) -> float:
        return UNKNOWN_DELAY_PENALTY_S if self.delay_s is None else self.delay_s

    def silent_for(self, now: float) -> float:
        return now - self.last_rx_s

    def snapshot(self, now: float) -> PathSnapshot:
        return PathSnapshot(
            label=self.label,
            alive=self.alive,
            rtt_ms=None if self.delay_s is None else round(self.delay_s * 1000, 2),
            weight=round(self.weight, 3),
            idle_s=round(self.silent_for(now), 2),
            tx_packets=self.tx_packets,
            tx_bytes=self.tx_bytes,
            rx_packets=self.rx_packets,
            rx_bytes=self.rx_bytes,
        )
