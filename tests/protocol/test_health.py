"""The uplink health state machine: examples on a virtual clock, and a model check (Hypothesis)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxify.protocol.health import Health, ProbePolicy, ProbeTracker

POLICY = ProbePolicy(interval_s=0.5, timeout_s=1.0, failures_before_down=3, successes_before_up=2)


def run_until_state(tracker: ProbeTracker, now: float, answered: bool) -> float:
    """Drive the tracker on a 10 ms virtual clock until its state changes; return that time."""
    start = tracker.state
    while tracker.state is start:
        now += 0.01
        sequence = tracker.probe_due(now)
        if sequence is not None and answered:
            tracker.on_reply(sequence, now + 0.005)
        tracker.handle_timer(now)
        assert now < 60, "the state never changed"
    return now


def test_a_fresh_uplink_is_up_and_probes_right_away() -> None:
    tracker = ProbeTracker(POLICY, now=100.0)
    assert tracker.state is Health.UP
    assert tracker.get_timer() == 100.0
    assert tracker.probe_due(100.0) == 1
    assert tracker.probe_due(100.1) is None  # not before the interval
    assert tracker.probe_due(100.5) == 2


def test_a_cut_is_noticed_within_interval_times_failures_plus_timeout() -> None:
    tracker = ProbeTracker(POLICY, now=0.0)
    now = 0.0
    for _ in range(10):  # a healthy minute's start
        now += 0.5
        sequence = tracker.probe_due(now)
        assert sequence is not None
        assert not tracker.on_reply(sequence, now + 0.02)
    cut = now + 0.01
    down = run_until_state(tracker, cut, answered=False)
    assert tracker.state is Health.DOWN
    bound = POLICY.interval_s * POLICY.failures_before_down + POLICY.timeout_s
    assert down - cut <= bound + 0.02  # the virtual clock ticks every 10 ms
    up = run_until_state(tracker, down, answered=True)
    assert tracker.state is Health.UP
    assert up - down <= POLICY.interval_s * POLICY.successes_before_up + 0.1


def test_rtt_loss_and_counters() -> None:
    tracker = ProbeTracker(POLICY, now=0.0)
    first = tracker.probe_due(0.0)
    assert first is not None
    tracker.on_reply(first, 0.040)
    assert tracker.rtt_s == pytest.approx(0.040)
    assert tracker.srtt_s == pytest.approx(0.040)
    second = tracker.probe_due(0.5)
    assert second is not None
    tracker.on_reply(second, 0.580)
    assert tracker.rtt_s == pytest.approx(0.080)
    assert tracker.srtt_s == pytest.approx(0.045)
    assert tracker.probe_due(1.0) is not None
    tracker.handle_timer(2.0)  # the third was lost
    assert (tracker.sent, tracker.received) == (3, 2)
    assert tracker.loss == pytest.approx(1 / 3)


def test_late_duplicate_and_unknown_replies_are_ignored() -> None:
    tracker = ProbeTracker(POLICY, now=0.0)
    sequence = tracker.probe_due(0.0)
    assert sequence is not None
    tracker.handle_timer(1.0)  # timed out
    assert not tracker.on_reply(sequence, 1.1)  # too late
    assert not tracker.on_reply(999, 1.1)
    assert tracker.received == 0
    assert tracker.loss == 1.0


def test_send_errors_count_as_losses_at_once() -> None:
    tracker = ProbeTracker(POLICY, now=0.0)
    changed = []
    now = 0.0
    for _ in range(3):
        sequence = tracker.probe_due(now)
        assert sequence is not None
        changed.append(tracker.on_send_error(sequence))
        now += 0.5
    assert changed == [False, False, True]
    assert tracker.state is Health.DOWN
    assert tracker.get_timer() == now  # nothing outstanding: only the next probe


def test_sequence_numbers_wrap_at_16_bits() -> None:
    tracker = ProbeTracker(ProbePolicy(interval_s=1.0, timeout_s=0.5), now=0.0)
    seen = set()
    for i in range(70_000):
        sequence = tracker.probe_due(float(i))
        assert sequence is not None and 0 <= sequence < 1 << 16
        tracker.on_reply(sequence, i + 0.1)
        seen.add(sequence)
    assert len(seen) == 1 << 16


def test_a_stall_does_not_burst_probes() -> None:
    tracker = ProbeTracker(POLICY, now=0.0)
    assert tracker.probe_due(0.0) is not None
    assert tracker.probe_due(10.0) is not None  # the loop was away for 10 s
    assert tracker.probe_due(10.1) is None


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        ProbePolicy(interval_s=0)
    with pytest.raises(ValueError):
        ProbePolicy(failures_before_down=0)


@given(st.lists(st.sampled_from(["ok", "lost", "error", "late"]), max_size=200))
def test_state_follows_the_consecutive_outcome_model(outcomes: list[str]) -> None:
    tracker = ProbeTracker(POLICY, now=0.0)
    model_state, fails, oks = Health.UP, 0, 0
    now = 0.0
    for outcome in outcomes:
        sequence = tracker.probe_due(now)
        assert sequence is not None
        before = tracker.state
        if outcome == "ok":
            tracker.on_reply(sequence, now + 0.1)
        elif outcome == "error":
            tracker.on_send_error(sequence)
        else:
            tracker.handle_timer(now + POLICY.timeout_s)
            if outcome == "late":
                tracker.on_reply(sequence, now + POLICY.timeout_s + 0.1)
        if outcome == "ok":
            fails, oks = 0, oks + 1
            if model_state is Health.DOWN and oks >= POLICY.successes_before_up:
                model_state = Health.UP
        else:
            fails, oks = fails + 1, 0
            if model_state is Health.UP and fails >= POLICY.failures_before_down:
                model_state = Health.DOWN
        assert tracker.state is model_state, (outcomes, before)
        now += POLICY.interval_s * 3  # every probe is resolved before the next is due
    assert tracker.sent == len(outcomes)
    assert tracker.received == outcomes.count("ok")
