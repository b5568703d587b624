"""gzip framing, the bounded inflater and the adaptive compression policy."""

import gzip
import os
import tracemalloc
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxify.protocol.compression import (
    FAILURES_BEFORE_BACKOFF,
    MAX_INFLATED_SIZE,
    MIN_COMPRESSIBLE_SIZE,
    CompressionPolicy,
    InflateError,
    gzip_packet,
    inflate,
)
from fluxify.protocol.header import Compression

TEXT = b"E" + b"GET / HTTP/1.1\r\nHost: fluxify.test\r\n" * 30


def test_gzip_packet_is_an_rfc1952_member_any_gzip_reader_opens() -> None:
    packed = gzip_packet(TEXT)
    assert packed[:3] == b"\x1f\x8b\x08"  # gzip magic + deflate, as Go's reader requires
    assert gzip.decompress(packed) == TEXT


@given(st.binary(max_size=MAX_INFLATED_SIZE))
def test_inflate_round_trips_anything_up_to_the_limit(data: bytes) -> None:
    assert inflate(gzip_packet(data)) == data


def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = zlib.compress(bytes(1_000_000), 9, 31)  # 1 MB of zeros in one gzip member
    assert len(bomb) < 1400  # small enough to arrive in a single datagram
    with pytest.raises(InflateError) as info:
        inflate(bomb)
    assert info.value.too_large


def test_a_gzip_bomb_is_never_inflated_into_memory() -> None:
    """Refusing the result is not enough: the inflater must stop at ``limit + 1`` bytes.

    An inflate that expands the whole member first and checks its length afterwards would
    pass the test above while spending 1 MB (or 1 GB) of memory per datagram.
    """
    bomb = zlib.compress(bytes(1_000_000), 9, 31)
    tracemalloc.start()
    try:
        with pytest.raises(InflateError):
            inflate(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000, f"inflating a bomb allocated {peak} bytes"


def test_one_byte_over_the_limit_is_refused() -> None:
    assert len(inflate(gzip_packet(bytes(MAX_INFLATED_SIZE)))) == MAX_INFLATED_SIZE
    with pytest.raises(InflateError):
        inflate(gzip_packet(bytes(MAX_INFLATED_SIZE + 1)))


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (gzip_packet(TEXT)[:-3], "truncated"),
        (gzip_packet(TEXT) + b"junk", "follow"),
        (b"not gzip at all", "corrupt"),
        (zlib.compress(TEXT), "corrupt"),  # a zlib stream is not a gzip member
    ],
)
def test_malformed_streams_are_refused(payload: bytes, problem: str) -> None:
    with pytest.raises(InflateError, match=problem):
        inflate(payload)


def test_policy_sends_compressible_packets_gzipped_only_when_smaller() -> None:
    policy = CompressionPolicy()
    payload, flag = policy.encode(TEXT)
    assert flag == Compression.GZIP and len(payload) < len(TEXT)
    assert inflate(payload) == TEXT


def test_policy_never_tries_tiny_packets() -> None:
    policy = CompressionPolicy()
    small = b"E" + bytes(MIN_COMPRESSIBLE_SIZE - 2)
    assert policy.encode(small) == (small, Compression.NONE)
    assert policy.attempts == 0


def test_policy_backs_off_exponentially_on_incompressible_traffic() -> None:
    policy = CompressionPolicy()
    noise = [os.urandom(1400) for _ in range(2000)]
    for packet in noise:
        assert policy.encode(packet) == (packet, Compression.NONE)
    # Without back-off this would be 2000 attempts; with doubling it is logarithmic.
    assert FAILURES_BEFORE_BACKOFF <= policy.attempts < 40


def test_policy_recovers_as_soon_as_traffic_compresses_again() -> None:
    policy = CompressionPolicy()
    for _ in range(200):
        policy.encode(os.urandom(1400))
    flags = [policy.encode(TEXT)[1] for _ in range(300)]
    assert flags[-1] == Compression.GZIP
    assert flags.count(Compression.GZIP) > 200


def test_disabled_policy_sends_everything_raw() -> None:
    policy = CompressionPolicy(enabled=False)
    assert policy.encode(TEXT) == (TEXT, Compression.NONE)
