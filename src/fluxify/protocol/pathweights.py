"""Per-path sending weights from queueing delay: send less on a path whose queue is building.

A path's queueing delay is its smoothed round trip minus the smallest one seen recently. A path
queueing clearly more than the least-queued path loses weight multiplicatively; any other path
gains weight additively (AIMD). The weights settle where the paths queue alike, which is where
each carries about its capacity's share: an unequal pair of links (50 + 30 Mbit/s) is loaded by
capacity instead of 1:1, which would cap the bond at twice the slower link. Comparing paths with
each other, not with a fixed threshold, keeps the ratio moving when every path is loaded. Pure:
samples and ``now`` come in as arguments.
"""

from collections.abc import Sequence

from fluxify.protocol.paths import PathState

MIN_WEIGHT = 0.05
WEIGHT_INCREASE = 0.05
WEIGHT_DECREASE = 0.85
QUEUE_DELAY_MARGIN_S = 0.0015  # queueing this much beyond the least-queued path = overloaded
MIN_FILTER_WINDOW_S = 30.0  # the base RTT is the minimum over the last 30..60 s (two buckets)
PEER_SAMPLE_MAX_AGE_S = 2.0  # other paths' queueing older than this is not compared against


class QueueDelayWeights:
    """Weights in (0, 1] per path, keyed by identity. Zero state: every path at weight 1.

    Not thread-safe: one per sender, updated per heartbeat echo (not per packet).
    """

    __slots__ = ("_min_delay", "_queueing")

    def __init__(self) -> None:
        # id(path) -> [min of the current bucket, min of the previous bucket, bucket start]
        self._min_delay: dict[int, list[float]] = {}
        self._queueing: dict[int, tuple[float, float]] = {}  # id(path) -> (queueing, when)

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
        old = path.weight
        if queueing > least + QUEUE_DELAY_MARGIN_S:
            path.weight = max(MIN_WEIGHT, old * WEIGHT_DECREASE)
        else:
            path.weight = min(1.0, old + WEIGHT_INCREASE)
        return path.weight != old

    def forget(self, path: PathState) -> None:
        self._min_delay.pop(id(path), None)
        self._queueing.pop(id(path), None)


def normalize(paths: Sequence[PathState]) -> None:
    """Scale weights so the heaviest is 1: only ratios matter, and the floor must not erase them."""
    heaviest = max((p.weight for p in paths), default=1.0)
    if 0 < heaviest < 1:
        for path in paths:
            path.weight = max(MIN_WEIGHT, path.weight / heaviest)
