"""The reorder buffer against plain models: exactly-once delivery, order, bounded holding."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.protocol.reorder import SEQ_MODULUS, ReorderBuffer

HOLD = 0.05


def deliver(buffer: ReorderBuffer, seq: int, now: float) -> list[int]:
    ready = buffer.push(seq, seq.to_bytes(8, "big"), now)
    packets = [seq.to_bytes(8, "big")] if ready is None else ready
    return [int.from_bytes(p, "big") for p in packets]


def test_in_order_packets_pass_straight_through() -> None:
    buffer = ReorderBuffer(HOLD)
    assert [deliver(buffer, s, 0.0) for s in (5, 6, 7)] == [[5], [6], [7]]
    assert buffer.held == 0 and buffer.deadline() is None


def test_a_gap_is_held_then_filled() -> None:
    buffer = ReorderBuffer(HOLD)
    assert deliver(buffer, 1, 0.0) == [1]
    assert deliver(buffer, 3, 0.0) == []
    assert deliver(buffer, 4, 0.001) == []
    assert buffer.deadline() == HOLD
    assert deliver(buffer, 2, 0.002) == [2, 3, 4]


def test_a_lost_packet_is_given_up_after_the_hold_time() -> None:
    buffer = ReorderBuffer(HOLD)
    deliver(buffer, 1, 0.0)
    assert deliver(buffer, 3, 0.010) == []
    assert buffer.expire(0.010 + HOLD / 2) == []
    released = buffer.expire(0.010 + HOLD)
    assert [int.from_bytes(p, "big") for p in released] == [3]
    assert buffer.skipped_gaps == 1
    assert deliver(buffer, 2, 0.1) == [2]  # late: delivered anyway
    assert buffer.released_late == 1


def test_wrap_around() -> None:
    buffer = ReorderBuffer(HOLD)
    deliver(buffer, SEQ_MODULUS - 2, 0.0)
    assert deliver(buffer, 0, 0.0) == []
    assert deliver(buffer, SEQ_MODULUS - 1, 0.0) == [SEQ_MODULUS - 1, 0]
    assert deliver(buffer, 1, 0.0) == [1]


@settings(max_examples=200)
@given(
    size=st.integers(1, 300),
    seed=st.integers(0, 2**32),
    displacement=st.integers(0, 40),
)
def test_any_bounded_shuffle_comes_out_sorted_without_expiry(
    size: int, seed: int, displacement: int
) -> None:
    rng = random.Random(seed)
    arrival = sorted(range(1, size + 1), key=lambda s: s + rng.uniform(0, displacement))
    arrival.remove(1)
    arrival.insert(0, 1)  # the first packet fixes where the sequence starts
    buffer = ReorderBuffer(HOLD)
    out = [s for seq in arrival for s in deliver(buffer, seq, 0.0)]
    assert out == list(range(1, size + 1))


@settings(max_examples=200)
@given(
    size=st.integers(1, 300),
    seed=st.integers(0, 2**32),
    loss=st.floats(0, 0.5),
)
def test_with_loss_and_jitter_every_packet_comes_out_exactly_once(
    size: int, seed: int, loss: float
) -> None:
    rng = random.Random(seed)
    sent = [s for s in range(1, size + 1) if s == 1 or rng.random() >= loss]
    timed = sorted((s * 0.001 + rng.uniform(0, 0.08), s) for s in sent)
    timed = [(0.0, 1), *[(t, s) for t, s in timed if s != 1]]
    buffer = ReorderBuffer(HOLD)
    out: list[int] = []
    in_order: list[int] = []
    for now, seq in timed:
        for released in buffer.expire(now):
            out.append(int.from_bytes(released, "big"))
            in_order.append(out[-1])
        late_before = buffer.released_late
        got = deliver(buffer, seq, now)
        out += got
        if buffer.released_late == late_before:
            in_order += got
        deadline = buffer.deadline()
        assert deadline is None or deadline >= now  # nothing overstays by more than one step
    out += [int.from_bytes(p, "big") for p in buffer.expire(1e9)]
    assert sorted(out) == sorted(sent)  # exactly once
    assert in_order == sorted(in_order)  # only packets whose gap was given up come late
