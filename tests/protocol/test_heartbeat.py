"""Heartbeat payloads: int64 big-endian nanoseconds, echoed unchanged."""

from fluxify.protocol.heartbeat import (
    pack_heartbeat,
    round_trip_ns,
    unpack_heartbeat,
)


def test_payload_is_int64_big_endian_nanoseconds() -> None:
    # The Go vector's heartbeat payload is 0102030405060708 (tests/protocol/data/go-v1.json).
    assert pack_heartbeat(0x0102030405060708) == bytes.fromhex("0102030405060708")
    assert unpack_heartbeat(bytes.fromhex("0102030405060708")) == 0x0102030405060708


def test_round_trip_is_now_minus_echoed_stamp() -> None:
    assert round_trip_ns(pack_heartbeat(1_000), now_ns=51_000) == 50_000


def test_malformed_or_future_echoes_give_no_rtt() -> None:
    assert round_trip_ns(b"\x01\x02", now_ns=10) is None
    assert round_trip_ns(pack_heartbeat(100), now_ns=99) is None


def test_other_payload_sizes_are_not_heartbeats() -> None:
    for size in (0, 7, 9, 15, 16, 17, 24):
        assert unpack_heartbeat(bytes(size)) is None
