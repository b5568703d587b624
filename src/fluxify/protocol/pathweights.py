"""Per-path sending weights: from delivered rates when the peer reports them, else queue delay.

A path's queueing delay is its smoothed round trip minus the smallest one seen recently. A path
queueing clearly more than the least-queued path loses weight multiplicatively; any other path
gains weight additively (AIMD). The weights settle where the paths queue alike, which is where
each carries about its capacity's share: an unequal pair of links (50 + 30 Mbit/s) is loaded by
capacity instead of 1:1, which would cap the bond at twice the slower link. Comparing paths with
each other, not with a fixed threshold, keeps the ratio moving when every path is loaded.

When the peer reports how many bytes it received on each path (extension ``rate-report``), the
weights are capacity ratios instead. A path at capacity (its queue grows while it carries at
least 5 Mbit/s, or it delivers under 75 % of what we send, as behind a policer) has the capacity
it delivers; that is remembered for 30 s, and a path with an empty queue meanwhile is credited
10 % more than it carries, so a capacity learnt low during a ramp grows back. A path not at capacity
lately is assumed as large as the largest known one, so it gets traffic and shows what it can
carry. One report sets the ratio where the queue-delay steps oscillated around it (80 + 20
Mbit/s: shares between 15 and 29 %, the bond no faster than the 80 link alone; at the right 20 %
it carries 90 Mbit/s). Queue delay alone sets the weights while no reports arrive.
Pure: samples, reports and ``now`` come in as arguments.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from fluxify.protocol.paths import PathState

MIN_WEIGHT = 0.05
WEIGHT_INCREASE = 0.05
WEIGHT_DECREASE = 0.85
QUEUE_DELAY_MARGIN_S = 0.0015  # queueing this much beyond the least-queued path = overloaded
MIN_FILTER_WINDOW_S = 30.0  # the base RTT is the minimum over the last 30..60 s (two buckets)
PEER_SAMPLE_MAX_AGE_S = 2.0  # other paths' queueing older than this is not compared against
RATE_WINDOW_S = 0.3  # delivered and sent rates are measured over at least this long
RATE_MAX_AGE_S = 2.0  # a path's rates older than this are not used; queue delay takes over
MIN_MEASURED_RATE = 625_000  # bytes/s (5 Mbit/s): less, e.g. the ACKs of an upload, says nothing
SHORT_DELIVERY = 0.75  # delivering under 75 % of what we send: at capacity (a policer drops)
QUEUE_DRAIN = 0.95  # a path at capacity with a growing queue gets 5 % less than it delivers
CAPACITY_MEMORY_S = 30.0  # a capacity learnt at saturation holds this long without a new one
UNKNOWN_CAPACITY_GAIN = 2.0  # a path not at capacity lately can carry at least twice its load
UNSATURATED_HEADROOM = 1.1  # a path with an empty queue can carry 10 % more than it does


@dataclass(slots=True)
class _Delivery:
    """One path's rate window: the peer's received-bytes counter and our sent bytes at its start."""

    delivered: int
    sent: int
    start: float
    when: float = float("-inf")  # end of the last complete window
    usage: float = 0.0  # bytes/s delivered in the last complete window
    capacity: float | None = None  # bytes/s it can carry, None: unknown
    learned: float = 0.0  # delivered rate when it was last at capacity
    learned_at: float = float("-inf")


class PathWeights:
    """Weights in (0, 1] per path, keyed by identity. Zero state: every path at weight 1.

    Not thread-safe: one per sender, updated per echo and per rate report (not per packet).
    """

    __slots__ = ("_delivery", "_min_delay", "_overloaded", "_queueing")

    def __init__(self) -> None:
        # id(path) -> [min of the current bucket, min of the previous bucket, bucket start]
        self._min_delay: dict[int, list[float]] = {}
        self._queueing: dict[int, tuple[float, float]] = {}  # id(path) -> (queueing, when)
        self._overloaded: dict[int, bool] = {}  # id(path) -> queues clearly more than the least
        self._delivery: dict[int, _Delivery] = {}

    def on_sample(self, path: PathState, sample_s: float, now: float) -> bool:
        """Feed one round-trip sample of ``path``; True when its weight changed."""
        key = id(path)
        buckets = self._min_delay.get(key)
        if buckets is None:
            buckets = self._min_delay[key] = [sample_s, sample_s, now]
        elif now - buckets[2] > MIN_FILTER_WINDOW_S:
            # A new bucket; the old one still counts, so a long busy spell does not make the
            # queue look like the base RTT.
            buckets[:] = [sample_s, buckets[0], now]
        else:
            buckets[0] = min(buckets[0], sample_s)
        smoothed = path.delay_s if path.delay_s is not None else sample_s
        queueing = smoothed - min(buckets[0], buckets[1])
        self._queueing[key] = (queueing, now)
        least = min(
            (q for q, when in self._queueing.values() if now - when <= PEER_SAMPLE_MAX_AGE_S),
            default=queueing,
        )
        overloaded = self._overloaded[key] = queueing > least + QUEUE_DELAY_MARGIN_S
        if self._rates_fresh(key, now):
            return False  # the reports set the weights
        old = path.weight
        if overloaded:
            path.weight = max(MIN_WEIGHT, old * WEIGHT_DECREASE)
        else:
            path.weight = min(1.0, old + WEIGHT_INCREASE)
        return path.weight != old

    def on_report(
        self, path: PathState, delivered_bytes: int, paths: Sequence[PathState], now: float
    ) -> bool:
        """The peer received ``delivered_bytes`` on ``path`` so far; True when weights changed.

        ``paths`` are all of the sender's paths: a report re-divides the shares among them.
        """
        key = id(path)
        window = self._delivery.get(key)
        if window is None or delivered_bytes < window.delivered:  # first report, or peer reset
            self._delivery[key] = _Delivery(delivered_bytes, path.tx_bytes, now)
            return False
        elapsed = now - window.start
        if elapsed < RATE_WINDOW_S:
            return False
        delivered_rate = (delivered_bytes - window.delivered) / elapsed
        sent_rate = (path.tx_bytes - window.sent) / elapsed
        window.delivered, window.sent, window.start, window.when = (
            delivered_bytes,
            path.tx_bytes,
            now,
            now,
        )
        # Either sign counts only on a path that carries enough to show its capacity: a queue
        # seen on a trickle (stale samples, jitter) must not teach it a trickle's capacity.
        loaded = sent_rate >= MIN_MEASURED_RATE
        queued = loaded and self._overloaded.get(key, False)
        short = loaded and delivered_rate < SHORT_DELIVERY * sent_rate
        if queued or short:  # at capacity: what it delivers is what it can carry
            window.learned, window.learned_at = delivered_rate, now
            window.capacity = delivered_rate * (QUEUE_DRAIN if queued else 1.0)
        elif now - window.learned_at <= CAPACITY_MEMORY_S:
            # Not at capacity: it can carry what it learnt; with an empty queue also a little
            # more than it carries now, so a capacity learnt low (during a ramp) grows back
            # instead of holding its share down for the whole memory time. A path merely less
            # queued than another gets no credit: on equal links that made the shares swing.
            spare = self._queueing.get(key, (0.0, now))[0] < QUEUE_DELAY_MARGIN_S
            credit = UNSATURATED_HEADROOM if spare else 1.0
            window.capacity = max(window.learned, delivered_rate * credit)
        else:
            window.capacity = None  # never at capacity lately: unknown
        window.usage = delivered_rate
        return self._share_by_capacity(paths, now)

    def _share_by_capacity(self, paths: Sequence[PathState], now: float) -> bool:
        """Weights proportional to capacity; a path of unknown capacity is assumed as large as
        the largest known one (or twice what it carries now), so it is tried and learnt."""
        alive = [p for p in paths if p.alive]
        if len(alive) < 2 or not all(self._rates_fresh(id(p), now) for p in alive):
            return False
        windows = [self._delivery[id(p)] for p in alive]
        known = [w.capacity for w in windows if w.capacity is not None]
        if not known or sum(w.usage for w in windows) < MIN_MEASURED_RATE:
            return False
        largest = max(known)
        capacities = [
            w.capacity if w.capacity is not None else max(largest, UNKNOWN_CAPACITY_GAIN * w.usage)
            for w in windows
        ]
        heaviest = max(capacities)
        if heaviest <= 0:
            return False
        changed = False
        for path, capacity in zip(alive, capacities, strict=True):
            weight = max(MIN_WEIGHT, capacity / heaviest)
            if weight != path.weight:
                path.weight = weight
                changed = True
        return changed

    def _rates_fresh(self, key: int, now: float) -> bool:
        window = self._delivery.get(key)
        return window is not None and now - window.when <= RATE_MAX_AGE_S

    def forget(self, path: PathState) -> None:
        for table in (self._min_delay, self._queueing, self._overloaded, self._delivery):
            table.pop(id(path), None)


def normalize(paths: Sequence[PathState]) -> None:
    """Scale weights so the heaviest is 1: only ratios matter, and the floor must not erase them."""
    heaviest = max((p.weight for p in paths), default=1.0)
    if 0 < heaviest < 1:
        for path in paths:
            path.weight = max(MIN_WEIGHT, path.weight / heaviest)
