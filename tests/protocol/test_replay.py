"""The anti-replay window against a plain ``set`` model, including wrap-around and far jumps."""

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.protocol.replay import HALF_SEQ_SPACE, SEQ_MODULUS, WINDOW_SIZE, ReplayWindow


class SetModel:
    """The specification in the plainest terms: numbers on an unbounded line, a set of seen ones.

    The wire number is placed on that line next to the newest one seen (RFC 1982 serial
    arithmetic); it is fresh when not seen and not more than WINDOW_SIZE behind the newest.
    """

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.newest: int | None = None

    def accept(self, seq: int) -> bool:
        if self.newest is None:
            position = seq
        else:
            delta = (seq - self.newest) % SEQ_MODULUS
            position = self.newest + (delta if delta < HALF_SEQ_SPACE else delta - SEQ_MODULUS)
        if self.newest is not None and self.newest - position > WINDOW_SIZE:
            return False
        if position in self.seen:
            return False
        self.seen.add(position)
        self.newest = position if self.newest is None else max(self.newest, position)
        return True


def test_window_is_at_least_2048_wide() -> None:
    assert WINDOW_SIZE >= 2048


def test_in_order_duplicates_and_reordering() -> None:
    window = ReplayWindow()
    assert [window.accept(s) for s in (1, 2, 3, 2, 5, 4, 4, 1)] == [
        True, True, True, False, True, True, False, False,
    ]  # fmt: skip


def test_exact_window_edge() -> None:
    window = ReplayWindow()
    assert window.accept(10_000)
    assert window.accept(10_000 - WINDOW_SIZE)
    assert not window.accept(10_000 - WINDOW_SIZE - 1)


def test_wrap_around_is_newer_not_older() -> None:
    window = ReplayWindow()
    assert window.accept(SEQ_MODULUS - 2)
    assert window.accept(SEQ_MODULUS - 1)
    assert window.accept(0)
    assert window.accept(1)
    assert not window.accept(SEQ_MODULUS - 1)
    assert window.accept(SEQ_MODULUS - 3)  # still inside the window, across the wrap


def test_far_jump_forward_clears_the_old_window() -> None:
    window = ReplayWindow()
    for seq in range(1, 100):
        assert window.accept(seq)
    assert window.accept(1_000_000)
    assert not window.accept(50)  # far behind now
    assert window.accept(1_000_000 - 5)  # blocks were cleared, not left holding stale bits


# Sequences that stay near a moving point, with occasional jumps, across the 2^32 wrap.
steps = st.one_of(
    st.integers(-WINDOW_SIZE - 70, 70),
    st.integers(-3 * WINDOW_SIZE, 3 * WINDOW_SIZE),
    st.sampled_from([HALF_SEQ_SPACE - 1, HALF_SEQ_SPACE, HALF_SEQ_SPACE + 1, 100_000]),
)


@settings(max_examples=300)
@given(
    start=st.integers(0, SEQ_MODULUS - 1) | st.just(SEQ_MODULUS - 50),
    moves=st.lists(steps, max_size=400),
)
def test_window_agrees_with_the_set_model(start: int, moves: list[int]) -> None:
    window, model = ReplayWindow(), SetModel()
    seq = start
    for move in moves:
        seq = (seq + move) % SEQ_MODULUS
        assert window.accept(seq) == model.accept(seq), f"disagree at seq {seq}"
