"""Queue-delay weights: a path whose round trip grows above its floor gets less traffic."""

from fluxify.protocol.paths import PathState
from fluxify.protocol.pathweights import MIN_WEIGHT, QueueDelayWeights, normalize
from fluxify.protocol.scheduler import RoundRobin


def feed(weights: QueueDelayWeights, path: PathState, rtt_s: float, now: float) -> None:
    path.add_delay_sample(rtt_s)
    weights.on_sample(path, rtt_s, now)


def test_the_path_that_queues_more_loses_weight_until_they_queue_alike() -> None:
    weights, fast, slow = QueueDelayWeights(), PathState("wan1", 0.0), PathState("wan2", 0.0)
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
    weights, lone, gone = QueueDelayWeights(), PathState("a", 0.0), PathState("b", 0.0)
    feed(weights, gone, 0.001, 0.0)
    feed(weights, lone, 0.001, 0.0)
    for step in range(1, 40):
        feed(weights, lone, 0.050, 3.0 + step * 0.25)  # "gone" stopped answering at t=0
    assert lone.weight == 1.0


def test_weights_never_reach_zero_and_normalize_keeps_ratios() -> None:
    weights, a, b = QueueDelayWeights(), PathState("a", 0.0), PathState("b", 0.0)
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
