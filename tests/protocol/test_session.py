"""The per-session codec the data plane calls: round trips, numbering, drops, fuzzing."""

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.protocol.compression import gzip_packet
from fluxify.protocol.drops import DropReason
from fluxify.protocol.header import Compression, PacketType, unpack_header
from fluxify.protocol.heartbeat import round_trip_ns
from fluxify.protocol.keys import KeySchedule
from fluxify.protocol.seal import Sealer
from fluxify.protocol.session import DataSession

KEY = bytes(range(32))
SID = 0x01020304


def ipv4(payload: bytes = b"hello") -> bytes:
    total = 20 + len(payload)
    return (
        struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0, bytes(4), bytes(4)) + payload
    )


def ipv6(payload: bytes = b"hello") -> bytes:
    return struct.pack(">IHBB16s16s", 6 << 28, len(payload), 17, 64, bytes(16), bytes(16)) + payload


def pair() -> tuple[DataSession, DataSession]:
    return DataSession(SID, KEY), DataSession(SID, KEY)


@pytest.mark.parametrize(
    "packet",
    [ipv4(), ipv6(), ipv4(b"A" * 1380), ipv6(bytes(1360))],
    ids=["v4-small", "v6-small", "v4-compressible", "v6-zeros"],
)
def test_ip_round_trip(packet: bytes) -> None:
    sender, receiver = pair()
    datagram = sender.seal_ip(packet)
    assert datagram is not None
    assert receiver.open(datagram) == (PacketType.IP, packet)
    assert receiver.drops.total() == 0


@pytest.mark.parametrize("rekey", [False, True], ids=["v1-keys", "rekey"])
@pytest.mark.parametrize(
    "packet",
    [ipv4(random.Random(5).randbytes(1380)), ipv4(b"A" * 1380), ipv4(b"ack")],
    ids=["incompressible", "compressible", "short"],
)
def test_seal_ip_is_reseal_ip_under_the_next_number(packet: bytes, *, rekey: bool) -> None:
    """The flattened hot path and the readable one seal byte for byte the same datagrams,
    through the compression back-off too (4 failures, then skipped packets)."""

    def session() -> DataSession:
        keys = KeySchedule(KEY, SID, client=True) if rekey else None
        return DataSession(SID, KEY, nonces=lambda: bytes(range(12)), keys=keys)

    fast, readable = session(), session()
    for number in range(1, 12):
        assert fast.seal_ip(packet, 3, 0x0100_0005, 77) == readable.reseal_ip(
            number, packet, 3, 0x0100_0005, 77
        )
        assert fast.compression.skip == readable.compression.skip
    assert fast.last_seq == 11


def test_compressible_packets_travel_gzipped_and_incompressible_ones_raw() -> None:
    sender, _ = pair()
    zipped = sender.seal_ip(ipv4(b"A" * 1380))
    raw = sender.seal_ip(ipv4(random.Random(3).randbytes(1380)))
    assert zipped is not None and raw is not None
    assert unpack_header(zipped).compression == Compression.GZIP
    assert unpack_header(raw).compression == Compression.NONE
    assert len(zipped) < 200


def test_heartbeat_echo_and_handshake_round_trip() -> None:
    client, server = pair()
    opened = server.open(client.seal_heartbeat(now_ns=1_000_000_000))
    assert opened is not None and opened[0] == PacketType.HEARTBEAT
    echo = client.open(server.seal_echo(opened[1]))
    assert echo is not None and echo[0] == PacketType.HEARTBEAT
    assert round_trip_ns(echo[1], now_ns=1_030_000_000) == 30_000_000
    assert server.open(client.seal_handshake()) == (PacketType.HANDSHAKE, b"")


def test_ip_packets_are_numbered_from_one_and_control_packets_zero() -> None:
    sender, _ = pair()
    seqs = [unpack_header(sender.seal_ip(ipv4()) or b"").seq for _ in range(3)]
    assert seqs == [1, 2, 3]
    assert unpack_header(sender.seal_heartbeat(5)).seq == 0
    assert unpack_header(sender.seal_echo(b"12345678")).seq == 0
    assert unpack_header(sender.seal_handshake()).seq == 0
    assert unpack_header(sender.seal_ip(ipv4()) or b"").seq == 4  # no gaps from heartbeats


def test_sequence_wraps_to_one_never_zero() -> None:
    sender, _ = pair()
    sender._seq = 2**32 - 2  # white-box: reaching the wrap by sending 4 billion packets is slow
    seqs = [unpack_header(sender.seal_ip(ipv4()) or b"").seq for _ in range(3)]
    assert seqs == [2**32 - 1, 1, 2]


def test_empty_ip_payload_is_never_sealed() -> None:
    sender, _ = pair()
    assert sender.seal_ip(b"") is None
    assert sender.drops[DropReason.EMPTY_IP] == 1
    assert sender.last_seq == 0


def _sealed_by_a_careless_peer(ptype: int, flag: int, plaintext: bytes, seq: int = 1) -> bytes:
    return Sealer(KEY, SID).seal(ptype, seq, flag, plaintext)


@pytest.mark.parametrize(
    ("ptype", "flag", "plaintext", "reason"),
    [
        (PacketType.IP, Compression.NONE, b"", DropReason.EMPTY_IP),  # crashed the Go server
        (PacketType.IP, Compression.GZIP, gzip_packet(b""), DropReason.EMPTY_IP),
        (PacketType.IP, Compression.NONE, b"\x15" + bytes(30), DropReason.NOT_IP),
        (PacketType.IP, Compression.NONE, b"\x45" + bytes(10), DropReason.NOT_IP),
        (PacketType.IP, Compression.GZIP, b"definitely not gzip", DropReason.BAD_GZIP),
        (PacketType.IP, 7, ipv4(), DropReason.BAD_GZIP),
        (PacketType.IP, Compression.GZIP, gzip_packet(bytes(4000)), DropReason.INFLATE_LIMIT),
        (4, Compression.NONE, b"", DropReason.UNKNOWN_TYPE),
    ],
)
def test_authenticated_but_bad_payloads_are_dropped_by_reason(
    ptype: int, flag: int, plaintext: bytes, reason: DropReason
) -> None:
    receiver = DataSession(SID, KEY)
    assert receiver.open(_sealed_by_a_careless_peer(ptype, flag, plaintext)) is None
    assert receiver.drops.snapshot() == {reason.name.lower(): 1}


def test_replayed_ip_datagram_is_dropped_but_heartbeats_are_not_windowed() -> None:
    sender, receiver = pair()
    datagram = sender.seal_ip(ipv4())
    assert datagram is not None
    assert receiver.open(datagram) is not None
    assert receiver.open(datagram) is None
    assert receiver.drops.snapshot() == {"replay": 1}
    heartbeat = sender.seal_heartbeat(1)
    assert receiver.open(heartbeat) is not None
    assert receiver.open(sender.seal_heartbeat(2)) is not None  # both seq 0: v1 semantics


def test_wrong_session_id_and_bad_version_are_dropped() -> None:
    sender, _ = pair()
    datagram = sender.seal_handshake()
    other = DataSession(SID + 1, KEY)
    assert other.open(datagram) is None
    assert other.drops.snapshot() == {"unknown_session": 1}
    bad_version = b"\x02" + datagram[1:]
    receiver = DataSession(SID, KEY)
    assert receiver.open(bad_version) is None
    assert receiver.drops.snapshot() == {"bad_version": 1}


def test_a_different_key_fails_the_tag() -> None:
    sender = DataSession(SID, bytes(32))
    receiver = DataSession(SID, KEY)
    assert receiver.open(sender.seal_handshake()) is None
    assert receiver.drops.snapshot() == {"bad_tag": 1}


@settings(max_examples=400)
@given(st.binary(max_size=1600))
def test_random_bytes_never_raise_only_drop_with_a_reason(data: bytes) -> None:
    receiver = DataSession(SID, KEY)
    assert receiver.open(data) is None
    assert receiver.drops.total() == 1


@settings(max_examples=300)
@given(data=st.binary(min_size=28, max_size=1600), flip=st.integers(0, 10_000))
def test_mutated_valid_datagrams_never_raise(data: bytes, flip: int) -> None:
    # Start from a well-formed header for our session so the fuzzer reaches the tag check.
    sender, receiver = pair()
    datagram = bytearray(sender.seal_ip(ipv4(data)) or b"")
    index = flip % len(datagram)
    datagram[index] ^= 1 + flip % 255
    assert receiver.open(bytes(datagram)) is None
    assert receiver.drops.total() == 1


def test_two_endpoints_over_a_lossy_reordering_duplicating_two_path_link() -> None:
    """Every distinct packet that arrives is delivered exactly once, whatever the link does."""
    rng = random.Random(20261125)
    sender, receiver = pair()
    packets = [ipv4(rng.randbytes(rng.randrange(1, 1300))) for _ in range(3000)]
    in_flight: list[tuple[float, bytes]] = []
    for i, packet in enumerate(packets):
        datagram = sender.seal_ip(packet)
        assert datagram is not None
        path_delay = 0.010 if i % 2 else 0.040  # two paths, 30 ms apart: heavy reordering
        for _copy in range(2 if rng.random() < 0.05 else 1):  # 5 % duplicated
            if rng.random() >= 0.03:  # 3 % lost
                in_flight.append((i * 0.0001 + path_delay + rng.random() * 0.002, datagram))
    delivered = []
    for _, datagram in sorted(in_flight, key=lambda item: item[0]):
        opened = receiver.open(datagram)
        if opened is not None:
            delivered.append(opened[1])
    assert len(delivered) == len(set(delivered))  # no duplicates reach the TUN
    sent_and_arrived = {d for _, d in in_flight}
    assert len(delivered) == len(sent_and_arrived)  # and nothing that arrived was lost
    assert set(delivered) <= set(packets)
    assert receiver.drops.snapshot() == {"replay": len(in_flight) - len(sent_and_arrived)}
