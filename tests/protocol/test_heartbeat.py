"""Heartbeat payloads: int64 big-endian nanoseconds, echoed unchanged."""

from fluxify.protocol.heartbeat import (
    pack_heartbeat,
    round_trip_ns,
    unpack_heartbeat,
    unpack_received_bytes,
)


def test_payload_is_int64_big_endian_nanoseconds() -> None:
    # The Go vector's heartbeat payload is 0102030405060708 (../shared/vectors/go-v1.json).
    assert pack_heartbeat(0x0102030405060708) == bytes.fromhex("0102030405060708")
    assert unpack_heartbeat(bytes.fromhex("0102030405060708")) == 0x0102030405060708


def test_round_trip_is_now_minus_echoed_stamp() -> None:
    assert round_trip_ns(pack_heartbeat(1_000), now_ns=51_000) == 50_000


def test_malformed_or_future_echoes_give_no_rtt() -> None:
    assert round_trip_ns(b"\x01\x02", now_ns=10) is None
    assert round_trip_ns(pack_heartbeat(100), now_ns=99) is None


def test_a_rate_report_heartbeat_carries_the_received_bytes_after_the_stamp() -> None:
    payload = pack_heartbeat(1_000, received_bytes=0x1122334455667788)
    assert payload == bytes.fromhex("00000000000003e81122334455667788")
    assert unpack_heartbeat(payload) == 1_000
    assert unpack_received_bytes(payload) == 0x1122334455667788
    assert round_trip_ns(payload, now_ns=1_500) == 500  # its echo still gives the round trip


def test_a_v1_heartbeat_has_no_counter_and_other_sizes_are_neither() -> None:
    assert unpack_received_bytes(pack_heartbeat(1_000)) is None
    assert pack_heartbeat(5, received_bytes=(1 << 64) + 7)[8:] == (7).to_bytes(8, "big")
    for size in (0, 7, 9, 15, 17, 24):
        assert unpack_heartbeat(bytes(size)) is None
        assert unpack_received_bytes(bytes(size)) is None
