"""Feedback packet codec (protocol/feedback.py): round trip, layout, malformed payloads."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.protocol.feedback import FeedbackEntry, pack_feedback, unpack_feedback

u32 = st.integers(0, 2**32 - 1)
entries = st.builds(
    FeedbackEntry, st.integers(0, 255), st.integers(0, 2**24 - 1), u32, u32, u32, u32
)


def test_layout_matches_the_module_docstring() -> None:
    # count(1) | path id(1) highest seq(4) datagrams(4) bytes(4) owd µs(4) receiver µs(4), BE
    payload = pack_feedback([FeedbackEntry(3, 0x010203, 10, 12_500, 15_000, 0xDEADBEEF)])
    assert payload.hex() == "01" + "03" + "00010203" + "0000000a" + "000030d4" + "00003a98" + (
        "deadbeef"
    )


@settings(max_examples=200)
@given(st.lists(entries, max_size=16))
def test_round_trip(items: list[FeedbackEntry]) -> None:
    assert unpack_feedback(pack_feedback(items)) == (items if items else [])


def test_counters_wrap_modulo_2_32() -> None:
    entry = FeedbackEntry(1, 5, 2**32 + 7, 2**33 + 1, 2**32, 2**32 + 9)
    assert unpack_feedback(pack_feedback([entry])) == [FeedbackEntry(1, 5, 7, 1, 0, 9)]


def test_more_than_16_entries_is_our_own_bug() -> None:
    with pytest.raises(ValueError, match="at most 16"):
        pack_feedback([FeedbackEntry(0, 0, 0, 0, 0, 0)] * 17)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x01", b"\x01" + bytes(20), b"\x01" + bytes(22), b"\x00\x00", b"\x11" + bytes(21 * 17)],
    ids=["empty", "count-only", "short-entry", "long-entry", "trailing", "17-entries"],
)
def test_malformed_payloads_unpack_to_none(payload: bytes) -> None:
    assert unpack_feedback(payload) is None


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(payload: bytes) -> None:
    result = unpack_feedback(payload)
    assert result is None or len(payload) == 1 + 21 * len(result)
