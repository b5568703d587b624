"""The reorder buffer against plain models: exactly-once delivery, order, bounded holding, and
the three releases (gap filled, gap known lost, deadline passed)."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.protocol.reorder import MAX_HELD_PACKETS, SEQ_MODULUS, ReorderBuffer

HOLD = 0.05


def deliver(buffer: ReorderBuffer, seq: int, now: float, hold: float = HOLD) -> list[int]:
    number = buffer.extend(seq)
    ready = buffer.push(number, seq.to_bytes(8, "big"), now + hold)
    packets = [seq.to_bytes(8, "big")] if ready is None else ready
    return [int.from_bytes(p, "big") for p in packets]


def numbers(packets: list[bytes]) -> list[int]:
    return [int.from_bytes(p, "big") for p in packets]


def test_in_order_packets_pass_straight_through() -> None:
    buffer = ReorderBuffer()
    assert [deliver(buffer, s, 0.0) for s in (5, 6, 7)] == [[5], [6], [7]]
    assert buffer.held == 0 and buffer.next_deadline() is None


def test_a_gap_is_held_until_its_deadline_or_filled() -> None:
    buffer = ReorderBuffer()
    assert deliver(buffer, 1, 0.0) == [1]
    assert deliver(buffer, 3, 0.0) == []
    assert deliver(buffer, 4, 0.001) == []
    assert buffer.next_deadline() == HOLD
    assert deliver(buffer, 2, 0.002) == [2, 3, 4]
    assert buffer.reordered == 2 and buffer.lost == 0


def test_a_lost_packet_is_given_up_at_the_deadline_and_delivered_late_if_it_comes() -> None:
    buffer = ReorderBuffer()
    deliver(buffer, 1, 0.0)
    assert deliver(buffer, 3, 0.010) == []
    assert buffer.expire(0.010 + HOLD / 2) == []
    assert numbers(buffer.expire(0.010 + HOLD)) == [3]
    assert buffer.lost == 1
    assert deliver(buffer, 2, 0.1) == [2]  # late: delivered anyway
    assert buffer.released_late == 1


def test_a_gap_known_lost_is_released_at_once_and_later_gaps_keep_waiting() -> None:
    buffer = ReorderBuffer()
    deliver(buffer, 1, 0.0)
    assert deliver(buffer, 3, 0.0) == []
    assert deliver(buffer, 5, 0.0) == []
    # Every path has delivered number 4 or later: 2 cannot come any more; 4 still may.
    assert numbers(buffer.release_below(4)) == [3]
    assert buffer.lost == 1 and buffer.held == 1
    assert deliver(buffer, 4, 0.0) == [4, 5]


def test_overflow_gives_up_the_oldest_gap() -> None:
    buffer = ReorderBuffer()
    deliver(buffer, 1, 0.0)
    out: list[int] = []
    for seq in range(3, 3 + MAX_HELD_PACKETS + 1):
        out += deliver(buffer, seq, 0.0)
    assert out == list(range(3, 3 + MAX_HELD_PACKETS + 1))  # number 2 was given up
    assert buffer.held == 0 and buffer.lost == 1


def test_wrap_around() -> None:
    buffer = ReorderBuffer()
    deliver(buffer, SEQ_MODULUS - 2, 0.0)
    assert deliver(buffer, 0, 0.0) == []
    assert deliver(buffer, SEQ_MODULUS - 1, 0.0) == [SEQ_MODULUS - 1, 0]
    assert deliver(buffer, 1, 0.0) == [1]


def test_released_packets_leave_no_heap_entries_behind() -> None:
    """Resolved gaps must not grow the heaps without bound (the buffer runs for months)."""
    buffer = ReorderBuffer()
    deliver(buffer, 1, 0.0)
    for base in range(2, 20_000, 2):
        deliver(buffer, base + 1, 0.0)
        deliver(buffer, base, 0.0)
        buffer.next_deadline()
    assert len(buffer._numbers) <= 2 and len(buffer._deadlines) <= 2


@settings(max_examples=200)
@given(size=st.integers(1, 300), seed=st.integers(0, 2**32), displacement=st.integers(0, 40))
def test_any_bounded_shuffle_comes_out_sorted_without_expiry(
    size: int, seed: int, displacement: int
) -> None:
    rng = random.Random(seed)
    arrival = sorted(range(1, size + 1), key=lambda s: s + rng.uniform(0, displacement))
    arrival.remove(1)
    arrival.insert(0, 1)  # the first packet fixes where the sequence starts
    buffer = ReorderBuffer()
    out = [s for seq in arrival for s in deliver(buffer, seq, 0.0)]
    assert out == list(range(1, size + 1))


@settings(max_examples=200)
@given(size=st.integers(1, 300), seed=st.integers(0, 2**32), loss=st.floats(0, 0.5))
def test_with_loss_and_jitter_every_packet_comes_out_exactly_once(
    size: int, seed: int, loss: float
) -> None:
    rng = random.Random(seed)
    sent = [s for s in range(1, size + 1) if s == 1 or rng.random() >= loss]
    timed = sorted((s * 0.001 + rng.uniform(0, 0.08), s) for s in sent)
    timed = [(0.0, 1), *[(t, s) for t, s in timed if s != 1]]
    buffer = ReorderBuffer()
    out: list[int] = []
    in_order: list[int] = []
    for now, seq in timed:
        for released in numbers(buffer.expire(now)):
            out.append(released)
            in_order.append(released)
        late_before = buffer.released_late
        got = deliver(buffer, seq, now)
        out += got
        if buffer.released_late == late_before:
            in_order += got
        deadline = buffer.next_deadline()
        assert deadline is None or deadline >= now  # nothing overstays by more than one step
    out += numbers(buffer.flush())
    assert sorted(out) == sorted(sent)  # exactly once
    assert in_order == sorted(in_order)  # only packets whose gap was given up come late
    missing = max(sent) - len(sent)  # numbers below the highest that never came
    assert buffer.lost == missing + buffer.released_late  # late ones were given up first
