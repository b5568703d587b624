"""TSO splitting and checksums against a plain word-by-word model (RFC 1071, RFC 793 §3.1,
RFC 2460 §8.1): every segment is a valid IP packet, the payloads join back to the original, and
the per-segment fields are those a NIC would write."""

import ipaddress
import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.protocol.checksum import complete_checksum
from fluxify.protocol.tcp_segment import TCP_CWR, TCP_FIN, TCP_PSH, partial_tcp, split_tso

ACK = 0x10


def model_sum(data: bytes) -> int:
    """The textbook ones'-complement sum: 16-bit big-endian words, carries folded back."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack(">H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo(src: bytes, dst: bytes, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack(">BBH", 0, 6, length)
    return src + dst + struct.pack(">IxxxB", length, 6)


def tcp_header(seq: int, flags: int, options: bytes = b"") -> bytes:
    offset = (20 + len(options)) // 4
    return struct.pack(">HHIIBBHHH", 40000, 5201, seq, 77, offset << 4, flags, 512, 0, 0) + options


def ipv4_packet(payload: bytes, flags: int, options: bytes = b"") -> bytes:
    tcp = tcp_header(0xFFFF_FF00, flags, options) + payload
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0xFFFE, 0x4000, 64, 6, 0, SRC4, DST4
    )
    return header + tcp


def ipv6_packet(payload: bytes, flags: int) -> bytes:
    tcp = tcp_header(12345, flags) + payload
    return struct.pack(">IHBB16s16s", 0x60000000, len(tcp), 6, 64, SRC6, DST6) + tcp


SRC4 = ipaddress.IPv4Address("10.8.0.2").packed
DST4 = ipaddress.IPv4Address("203.0.113.9").packed
SRC6 = ipaddress.IPv6Address("fd00:8::2").packed
DST6 = ipaddress.IPv6Address("2001:db8::9").packed
TIMESTAMPS = bytes([1, 1, 8, 10]) + bytes(8)  # NOP NOP TS: a 32-byte TCP header


def check_segment_v4(segment: bytes) -> tuple[int, int, int, bytes]:
    assert model_sum(segment[:20]) == 0xFFFF  # the IP header checksum verifies
    total, ident = struct.unpack_from(">HH", segment, 2)
    assert total == len(segment)
    tcp = segment[20:]
    assert model_sum(pseudo(segment[12:16], segment[16:20], len(tcp)) + tcp) == 0xFFFF
    seq = struct.unpack_from(">I", tcp, 4)[0]
    data_offset = (tcp[12] >> 4) * 4
    return ident, seq, tcp[13], tcp[data_offset:]


def check_segment_v6(segment: bytes) -> tuple[int, int, bytes]:
    length = struct.unpack_from(">H", segment, 4)[0]
    assert length == len(segment) - 40
    tcp = segment[40:]
    assert model_sum(pseudo(segment[8:24], segment[24:40], len(tcp)) + tcp) == 0xFFFF
    seq = struct.unpack_from(">I", tcp, 4)[0]
    return seq, tcp[13], tcp[(tcp[12] >> 4) * 4 :]


@settings(max_examples=150, deadline=None)
@given(
    payload_size=st.integers(min_value=1, max_value=20000),
    mss=st.integers(min_value=1, max_value=1500),
    fin=st.booleans(),
    options=st.sampled_from([b"", TIMESTAMPS]),
)
def test_ipv4_segments_are_valid_and_join_back(
    payload_size: int, mss: int, fin: bool, options: bytes
) -> None:
    payload = os.urandom(payload_size)
    flags = ACK | TCP_PSH | TCP_CWR | (TCP_FIN if fin else 0)
    segments = split_tso(ipv4_packet(payload, flags, options), 20, mss)
    assert segments is not None
    assert len(segments) == -(-payload_size // mss)
    joined = b""
    for index, segment in enumerate(segments):
        ident, seq, seg_flags, data = check_segment_v4(segment)
        assert ident == (0xFFFE + index) & 0xFFFF
        assert seq == (0xFFFF_FF00 + index * mss) & 0xFFFF_FFFF
        assert len(data) <= mss
        last = index == len(segments) - 1
        assert seg_flags & (TCP_FIN | TCP_PSH) == ((flags & (TCP_FIN | TCP_PSH)) if last else 0)
        assert bool(seg_flags & TCP_CWR) == (index == 0)
        assert seg_flags & ACK
        assert segment[20 + 20 : 20 + 20 + len(options)] == options
        joined += data
    assert joined == payload


@settings(max_examples=100, deadline=None)
@given(payload_size=st.integers(min_value=1, max_value=64000), mss=st.integers(1200, 1440))
def test_ipv6_segments_are_valid_and_join_back(payload_size: int, mss: int) -> None:
    payload = os.urandom(payload_size)
    segments = split_tso(ipv6_packet(payload, ACK | TCP_PSH), 40, mss)
    assert segments is not None
    joined = b""
    for index, segment in enumerate(segments):
        seq, seg_flags, data = check_segment_v6(segment)
        assert seq == 12345 + index * mss
        assert bool(seg_flags & TCP_PSH) == (index == len(segments) - 1)
        joined += data
    assert joined == payload


def test_what_does_not_parse_as_a_tcp_super_packet_is_refused() -> None:
    good = ipv4_packet(b"x" * 3000, ACK)
    assert split_tso(good, 20, 0) is None  # no segment size
    assert split_tso(good, 24, 1000) is None  # TCP not where the IP header ends
    assert split_tso(good[:30], 20, 1000) is None  # truncated TCP header
    udp = bytearray(good)
    udp[9] = 17
    assert split_tso(bytes(udp), 20, 1000) is None
    assert split_tso(b"\x00" * 60, 20, 1000) is None  # not IP
    assert split_tso(ipv6_packet(b"y" * 100, ACK), 20, 1000) is None


def _pseudo_of(segment: bytes) -> int:
    """The reference pseudo-header sum of an IPv4 or IPv6 TCP segment."""
    if segment[0] >> 4 == 4:
        return model_sum(pseudo(segment[12:16], segment[16:20], len(segment) - 20)) % 0xFFFF
    return model_sum(pseudo(segment[8:24], segment[24:40], len(segment) - 40)) % 0xFFFF


@settings(max_examples=100, deadline=None)
@given(
    payload_size=st.integers(min_value=1, max_value=30000),
    mss=st.integers(min_value=1, max_value=1500),
    v6=st.booleans(),
    options=st.sampled_from([b"", TIMESTAMPS]),
)
def test_partial_segments_hold_the_pseudo_header_sum_and_finish_into_the_complete_ones(
    payload_size: int, mss: int, v6: bool, options: bytes
) -> None:
    payload = os.urandom(payload_size)
    flags = ACK | TCP_PSH | TCP_CWR
    packet = ipv6_packet(payload, flags) if v6 else ipv4_packet(payload, flags, options)
    l4 = 40 if v6 else 20
    complete = split_tso(packet, l4, mss)
    partial = split_tso(packet, l4, mss, partial=True)
    assert complete is not None and partial is not None
    assert len(partial) == len(complete)
    for whole, part in zip(complete, partial, strict=True):
        check = l4 + 16
        assert whole[:check] == part[:check] and whole[check + 2 :] == part[check + 2 :]
        assert struct.unpack_from(">H", part, check)[0] % 0xFFFF == _pseudo_of(part)
        assert partial_tcp(part) == l4
        finished = bytearray(part)
        assert complete_checksum(finished, l4, 16)
        assert bytes(finished) == whole  # what the receiving kernel makes of it
        # A complete checksum is told apart, but where it equals the pseudo-header sum.
        coincides = struct.unpack_from(">H", whole, check)[0] % 0xFFFF == _pseudo_of(whole)
        assert partial_tcp(whole) == (l4 if coincides else 0)


def test_only_whole_tcp_packets_read_as_partial() -> None:
    segment = split_tso(ipv4_packet(b"p" * 3000, ACK), 20, 1000, partial=True)
    assert segment is not None
    first = segment[0]
    assert partial_tcp(first) == 20
    assert partial_tcp(first[:-1]) == 0  # shorter than its IP length
    for at, value in ((6, 0x20), (7, 0x01), (9, 17)):  # more fragments, an offset, UDP
        changed = bytearray(first)
        changed[at] |= value
        assert partial_tcp(changed) == 0
    assert partial_tcp(b"\x45" + bytes(30)) == 0
    assert partial_tcp(b"\x00" * 60) == 0
    v6 = split_tso(ipv6_packet(b"q" * 3000, ACK), 40, 1000, partial=True)
    assert v6 is not None
    assert partial_tcp(v6[0]) == 40
    hop_by_hop = bytearray(v6[0])
    hop_by_hop[6] = 0  # an extension header first: not split, not finished by the kernel here
    assert partial_tcp(hop_by_hop) == 0


def test_the_documented_partial_checksum_example() -> None:
    # docs/protocol.md §3.5: 10.8.0.2 -> 203.0.113.9, TCP length 1380: the field holds 4b7e.
    split = split_tso(ipv4_packet(bytes(2 * 1348), ACK, TIMESTAMPS), 20, 1348, partial=True)
    assert split is not None
    assert len(split[0]) == 1400
    assert split[0][36:38] == bytes.fromhex("4b7e")
