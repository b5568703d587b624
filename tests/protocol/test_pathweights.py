"""Path weights: a path whose round trip grows above its floor gets less traffic; with rate
reports, a path at capacity gets the share it delivers."""

from pytest import approx

from fluxify.protocol.paths import PathState
from fluxify.protocol.pathweights import (
    CAPACITY_MEMORY_S,
    MIN_MEASURED_RATE,
    MIN_WEIGHT,
    QUEUE_DRAIN,
    RATE_MAX_AGE_S,
    RATE_WINDOW_S,
    UNSATURATED_HEADROOM,
    PathWeights,
    normalize,
)
from fluxify.protocol.scheduler import RoundRobin


def feed(weights: PathWeights, path: PathState, rtt_s: float, now: float) -> None:
    path.add_delay_sample(rtt_s)
    weights.on_sample(path, rtt_s, now)


def test_the_path_that_queues_more_loses_weight_until_they_queue_alike() -> None:
    weights, fast, slow = PathWeights(), PathState("wan1", 0.0), PathState("wan2", 0.0)
    feed(weights, fast, 0.020, 0.0)
    feed(weights, slow, 0.060, 0.0)  # a longer path is not a queue: base RTTs are learnt
    assert (fast.weight, slow.weight) == (1.0, 1.0)
    for step in range(1, 20):
        feed(weights, fast, 0.022, step * 0.25)
        feed(weights, slow, 0.100, step * 0.25)  # 40 ms of queue on the slow path
    assert fast.weight == 1.0 and slow.weight < 0.2
    for step in range(20, 200):
        feed(weights, fast, 0.030, step * 0.25)
        feed(weights, slow, 0.068, step * 0.25)  # both queue 8 ms: alike
    assert slow.weight == 1.0


def test_a_lone_path_keeps_its_weight_and_stale_peers_are_ignored() -> None:
    weights, lone, gone = PathWeights(), PathState("a", 0.0), PathState("b", 0.0)
    feed(weights, gone, 0.001, 0.0)
    feed(weights, lone, 0.001, 0.0)
    for step in range(1, 40):
        feed(weights, lone, 0.050, 3.0 + step * 0.25)  # "gone" stopped answering at t=0
    assert lone.weight == 1.0


def test_weights_never_reach_zero_and_normalize_keeps_ratios() -> None:
    weights, a, b = PathWeights(), PathState("a", 0.0), PathState("b", 0.0)
    for path in (a, b):
        feed(weights, path, 0.001, 0.0)
    for step in range(1, 100):
        feed(weights, b, 0.001, step * 0.1)
        feed(weights, a, 0.050, step * 0.1)
    assert a.weight == MIN_WEIGHT
    b.weight, a.weight = 0.5, 0.25
    normalize([a, b])
    assert (a.weight, b.weight) == (0.5, 1.0)


def test_the_scheduler_sends_by_weight_interleaved() -> None:
    a, b = PathState("a", 0.0), PathState("b", 0.0)
    a.weight, b.weight = 1.0, 0.25
    scheduler: RoundRobin[PathState] = RoundRobin()
    scheduler.refresh([a, b])
    picks = [scheduler.pick() for _ in range(400)]
    assert picks.count(a) == 4 * picks.count(b)
    labels = "".join(p.label if p else "-" for p in picks[:40])
    assert "aaaaaa" not in labels  # spread out, not in runs


# -- rate reports (extension rate-report) ------------------------------------------------------

MB = 1_000_000


def report(
    weights: PathWeights,
    path: PathState,
    paths: list[PathState],
    *,
    sent: float,
    delivered: float,
    now: float,
) -> bool:
    """The sender has sent ``sent`` bytes on ``path`` so far and the peer reports ``delivered``."""
    path.tx_bytes = int(sent)
    return weights.on_report(path, int(delivered), paths, now)


def run_windows(
    weights: PathWeights,
    paths: list[PathState],
    rates: dict[str, tuple[float, float]],
    *,
    start: float,
    windows: int,
) -> float:
    """Feed ``windows`` report rounds with per-path (sent, delivered) bytes/s; returns the end."""
    now, window = start, RATE_WINDOW_S + 0.01  # a little over: float sums must not fall short
    for _ in range(windows):
        now += window
        for path in paths:
            sent_rate, delivered_rate = rates[path.label]
            sent = path.tx_bytes + sent_rate * window
            delivered = weights._delivery[id(path)].delivered + delivered_rate * window
            report(weights, path, paths, sent=sent, delivered=delivered, now=now)
    return now


def two_paths(first: str, second: str) -> tuple[PathWeights, PathState, PathState, list[PathState]]:
    a, b = PathState(first, 0.0), PathState(second, 0.0)
    return PathWeights(), a, b, [a, b]


def start_reports(weights: PathWeights, paths: list[PathState]) -> None:
    for path in paths:
        report(weights, path, paths, sent=0, delivered=0, now=0.0)


def test_a_path_delivering_short_gets_the_share_it_delivers_and_the_other_is_tried_larger() -> None:
    weights, big, small, paths = two_paths("big", "small")
    start_reports(weights, paths)
    # equal split of 10 MB/s: "small" delivers 2.5 of its 5 (at capacity), "big" all of its 5
    now = run_windows(
        weights, paths, {"big": (5 * MB, 5 * MB), "small": (5 * MB, 2.5 * MB)}, start=0.0, windows=2
    )
    # big's capacity is unknown: assumed twice what it carries (10), small's is 2.5
    assert (big.weight, small.weight) == approx((1.0, 0.25))
    # now both are at capacity: the weights are the delivered rates' ratio
    run_windows(
        weights,
        paths,
        {"big": (14 * MB, 10 * MB), "small": (4 * MB, 2.5 * MB)},
        start=now,
        windows=2,
    )
    assert (big.weight, small.weight) == approx((1.0, 0.25))


def test_a_learnt_capacity_holds_while_the_path_runs_below_it_then_is_forgotten() -> None:
    weights, _big, small, paths = two_paths("big", "small")
    start_reports(weights, paths)
    at_capacity = {"big": (8 * MB, 8 * MB), "small": (4 * MB, 2 * MB)}
    now = run_windows(weights, paths, at_capacity, start=0.0, windows=1)
    assert small.weight == approx(2 / 16)
    # big stays at capacity (8 MB/s); small carries 1 MB/s, below what it showed it can carry
    below = {"big": (12 * MB, 8 * MB), "small": (1 * MB, 1 * MB)}
    now = run_windows(weights, paths, below, start=now, windows=3)
    assert small.weight == approx(2 / 8)  # its learnt 2 MB/s, not the 1 it carries now
    windows_to_forget = int(CAPACITY_MEMORY_S / RATE_WINDOW_S) + 2
    run_windows(weights, paths, below, start=now, windows=windows_to_forget)
    assert small.weight == approx(1.0)  # unknown again: tried as large as the largest known


def test_reports_without_a_path_at_capacity_or_with_little_traffic_change_nothing() -> None:
    weights, a, b, paths = two_paths("a", "b")
    a.weight, b.weight = 1.0, 0.5
    start_reports(weights, paths)
    now = run_windows(
        weights, paths, {"a": (4 * MB, 4 * MB), "b": (2 * MB, 2 * MB)}, start=0.0, windows=4
    )
    assert (a.weight, b.weight) == (1.0, 0.5)
    trickle = MIN_MEASURED_RATE / 10
    run_windows(
        weights, paths, {"a": (trickle, trickle), "b": (trickle, 0.0)}, start=now, windows=4
    )
    assert (a.weight, b.weight) == (1.0, 0.5)


def test_a_queueing_path_counts_as_at_capacity_and_is_drained() -> None:
    weights, a, b, paths = two_paths("a", "b")
    feed(weights, a, 0.010, 0.0)
    feed(weights, b, 0.010, 0.0)
    feed(weights, a, 0.010, 0.1)
    feed(weights, b, 0.030, 0.1)  # b queues 20 ms more than a
    start_reports(weights, paths)
    run_windows(
        weights, paths, {"a": (4 * MB, 4 * MB), "b": (4 * MB, 4 * MB)}, start=0.1, windows=1
    )
    # b delivers all it gets but its queue grows: capacity 4 MB/s less the drain margin
    assert b.weight == approx(QUEUE_DRAIN * 4 / 8)


def test_while_reports_are_fresh_delay_samples_leave_the_weights_alone() -> None:
    weights, a, b, paths = two_paths("a", "b")
    start_reports(weights, paths)
    now = run_windows(
        weights, paths, {"a": (4 * MB, 4 * MB), "b": (4 * MB, 1 * MB)}, start=0.0, windows=1
    )
    assert b.weight == approx(1 / 8)
    for step in range(1, 5):
        feed(weights, a, 0.010, now + step * 0.1)
        feed(weights, b, 0.010, now + step * 0.1)  # no queue anywhere: AIMD would add weight
    assert b.weight == approx(1 / 8)
    later = now + RATE_MAX_AGE_S + 1.0  # the reports stopped: queue delay decides again
    feed(weights, a, 0.010, later)
    feed(weights, b, 0.010, later)
    assert b.weight > 1 / 8


def test_a_counter_that_goes_back_restarts_the_window() -> None:
    weights, _a, b, paths = two_paths("a", "b")
    start_reports(weights, paths)
    run_windows(
        weights, paths, {"a": (4 * MB, 4 * MB), "b": (4 * MB, 1 * MB)}, start=0.0, windows=1
    )
    before = b.weight
    # the peer restarted its counters (new server process): no rate from the negative step
    assert not report(weights, b, paths, sent=b.tx_bytes + MB, delivered=10, now=10.0)
    assert b.weight == before


def test_a_queue_seen_on_a_trickle_teaches_no_capacity() -> None:
    weights, a, b, paths = two_paths("a", "b")
    feed(weights, a, 0.010, 0.0)
    feed(weights, b, 0.010, 0.0)
    feed(weights, a, 0.010, 0.1)
    feed(weights, b, 0.130, 0.1)  # stale echoes of a path that just came back: 120 ms "queue"
    start_reports(weights, paths)
    trickle = MIN_MEASURED_RATE / 2
    run_windows(
        weights, paths, {"a": (4 * MB, 3 * MB), "b": (trickle, trickle)}, start=0.1, windows=2
    )
    assert weights._delivery[id(b)].capacity is None  # unknown, so tried as large as a
    assert (a.weight, b.weight) == approx((1.0, 1.0))


def settle(weights: PathWeights, path: PathState, rtt_s: float, now: float) -> None:
    """Enough samples of ``rtt_s`` for the smoothed round trip to sit on it."""
    for step in range(60):
        feed(weights, path, rtt_s, now + step * 0.001)


def learnt_low(queue_s: float, big_queue_s: float) -> float:
    """small learnt 1 MB/s while queueing; then it carries all of that over a ``queue_s``
    queue while big (at capacity, 8 MB/s) queues ``big_queue_s``. Returns small's weight."""
    weights, big, small, paths = two_paths("big", "small")
    for path in paths:
        feed(weights, path, 0.010, 0.0)  # both floors: 10 ms
    settle(weights, small, 0.030, 0.1)
    start_reports(weights, paths)
    now = run_windows(
        weights, paths, {"big": (12 * MB, 8 * MB), "small": (2 * MB, 1 * MB)}, start=0.2, windows=1
    )
    assert small.weight == approx(QUEUE_DRAIN * 1 / 8)
    settle(weights, big, 0.010 + big_queue_s, now)
    settle(weights, small, 0.010 + queue_s, now)
    run_windows(
        weights,
        paths,
        {"big": (12 * MB, 8 * MB), "small": (1 * MB, 1 * MB)},
        start=now + 0.1,
        windows=1,
    )
    return small.weight


def test_only_a_path_with_an_empty_queue_is_credited_more_than_it_carries() -> None:
    empty_queue_weight = learnt_low(queue_s=0.0, big_queue_s=0.003)
    assert empty_queue_weight == approx(UNSATURATED_HEADROOM * 1 / 8)  # grows back
    # 3 ms of queue, less than big's 2.5 + margin: not at capacity, yet no spare room shown
    queued_weight = learnt_low(queue_s=0.003, big_queue_s=0.0025)
    assert queued_weight == approx(1 / 8)
