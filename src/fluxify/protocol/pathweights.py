"""Per-path sending weights from queueing delay: send less on a path whose queue is building.

A path's queueing delay is its smoothed round trip minus the smallest one seen recently. While
that stays under a threshold the path's weight grows additively; above it, the weight shrinks
multiplicatively (the AIMD shape of LEDBAT-like controllers). Weights feed the uplink scheduler,
so an unequal pair of links (50 + 30 Mbit/s) is loaded roughly by capacity instead of 1:1, which
would cap the bond at twice the slower link. Pure: samples and ``now`` come in as arguments.
"""

from collections.abc import Sequence

from fluxify.protocol.paths import PathState

MIN_WEIGHT = 0.05
WEIGHT_INCREASE = 0.05
WEIGHT_DECREASE = 0.85
QUEUE_DELAY_FLOOR_S = 0.002  # queueing beyond max(2 ms, a quarter of the base RTT) = overloaded
QUEUE_DELAY_FRACTION = 0.25
MIN_FILTER_WINDOW_S = 10.0  # forget the minimum after this long (routes change)


class QueueDelayWeights:
    """Weights in (0, 1] per path, keyed by identity. Zero state: every path at weight 1.

    Not thread-safe: one per sender, updated per heartbeat echo (not per packet).
    """

    __slots__ = ("_min_delay",)

    def __init__(self) -> None:
        self._min_delay: dict[int, tuple[float, float]] = {}  # id(path) -> (min delay, since)

    def on_sample(self, path: PathState, sample_s: float, now: float) -> bool:
        """Feed one round-trip sample of ``path``; True when its weight changed."""
        key = id(path)
        floor = self._min_delay.get(key)
        if floor is None or sample_s <= floor[0] or now - floor[1] > MIN_FILTER_WINDOW_S:
            self._min_delay[key] = floor = (sample_s, now)
        smoothed = path.delay_s if path.delay_s is not None else sample_s
        queueing = smoothed - floor[0]
        old = path.weight
        if queueing > max(QUEUE_DELAY_FLOOR_S, QUEUE_DELAY_FRACTION * floor[0]):
            path.weight = max(MIN_WEIGHT, old * WEIGHT_DECREASE)
        else:
            path.weight = min(1.0, old + WEIGHT_INCREASE)
        return path.weight != old

    def forget(self, path: PathState) -> None:
        self._min_delay.pop(id(path), None)


def normalize(paths: Sequence[PathState]) -> None:
    """Scale weights so the heaviest is 1: only ratios matter, and the floor must not erase them."""
    heaviest = max((p.weight for p in paths), default=1.0)
    if 0 < heaviest < 1:
        for path in paths:
            path.weight = max(MIN_WEIGHT, path.weight / heaviest)
