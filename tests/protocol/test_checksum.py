"""The Internet checksum (RFC 1071) against published vectors and a word-by-word reference."""

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.protocol.checksum import complete_checksum, internet_checksum, ones_sum
from tests.protocol.test_tcp_segment import ACK, DST4, SRC4, ipv4_packet, pseudo

# RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (end-around carries folded).
RFC1071_EXAMPLE = bytes.fromhex("0001f203f4f5f6f7")
# An IPv4 header (UDP, 192.168.0.1 -> 192.168.0.199) with its checksum b861 in place.
IPV4_HEADER = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")


def reference_sum(data: bytes) -> int:
    """The textbook sum: zero-pad to whole words, add them as plain integers, then fold the
    carries back until 16 bits remain; 0xFFFF (ones'-complement minus zero) reads as 0."""
    padded = data + b"\0" * (len(data) % 2)
    total = sum(int.from_bytes(padded[i : i + 2], "big") for i in range(0, len(padded), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return 0 if total == 0xFFFF else total


def test_the_rfc_1071_example() -> None:
    assert ones_sum(RFC1071_EXAMPLE) == 0xDDF2
    assert internet_checksum(RFC1071_EXAMPLE) == 0x220D


def test_a_known_ipv4_header_checksum_and_its_verification() -> None:
    assert internet_checksum(IPV4_HEADER) == 0xB861
    summed = IPV4_HEADER[:10] + b"\xb8\x61" + IPV4_HEADER[12:]
    assert internet_checksum(summed) == 0  # a header that carries its checksum sums to -0


def test_odd_lengths_pad_with_a_zero_byte() -> None:
    assert ones_sum(b"\xab") == 0xAB00
    assert ones_sum(b"\x00\x01\xf2") == 0xF201
    assert internet_checksum(b"") == 0


def test_an_initial_partial_sum_is_added() -> None:
    assert internet_checksum(b"\x12\x34", 0x0001) == 0xFFFF - 0x1235


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=4000))
def test_ones_sum_matches_the_reference(data: bytes) -> None:
    assert ones_sum(data) == reference_sum(data)
    assert internet_checksum(data) == -reference_sum(data) % 0xFFFF


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1500), st.binary(max_size=1500))
def test_sums_of_even_pieces_add_up(head: bytes, tail: bytes) -> None:
    head += b"\0" * (len(head) % 2)  # RFC 1071 §2(C): sums of word-aligned parts add
    assert ones_sum(head + tail) == (ones_sum(head) + ones_sum(tail)) % 0xFFFF


def test_a_partial_checksum_is_completed_like_the_kernel_would() -> None:
    for payload_size in (0, 1, 1001):
        packet = bytearray(ipv4_packet(os.urandom(payload_size), ACK))
        tcp_length = len(packet) - 20
        # NEEDS_CSUM: the check field holds the folded pseudo-header sum, not complemented.
        struct.pack_into(">H", packet, 36, reference_sum(pseudo(SRC4, DST4, tcp_length)))
        assert complete_checksum(packet, 20, 16)
        assert reference_sum(pseudo(SRC4, DST4, tcp_length) + bytes(packet[20:])) == 0
    assert not complete_checksum(bytearray(30), 20, 16)
    assert not complete_checksum(bytearray(60), -1, 16)


def test_a_udp_checksum_of_zero_is_sent_as_all_ones() -> None:
    # A datagram whose complete sum is 0xFFFF: its checksum would be 0, which means "none".
    packet = bytearray(struct.pack(">HHHH", 0xFFFF, 0, 0, 0) + b"\0\0")
    assert complete_checksum(packet, 0, 6)
    assert packet[6:8] == b"\xff\xff"
