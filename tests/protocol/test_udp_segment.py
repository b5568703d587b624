"""USO super-packets split into datagrams a plain TUN accepts: lengths, IDs and checksums checked
against a word-by-word RFC 1071 reference, for IPv4 and IPv6 and any payload and segment size."""

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from fluxify.protocol.udp_segment import split_uso

V4_SRC, V4_DST = ipaddress.ip_address("10.8.0.2").packed, ipaddress.ip_address("198.19.0.2").packed
V6_SRC = ipaddress.ip_address("fd00:8::2").packed
V6_DST = ipaddress.ip_address("2001:db8::2").packed


def reference_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def super_packet(version: int, payload: bytes) -> bytes:
    """What the stack hands a USO TUN: one UDP header for the whole payload, the IP lengths of
    the whole, checksums left to the segmentation (the stack writes a partial sum; any value
    must be replaced)."""
    udp = struct.pack(">HHHH", 4433, 443, (8 + len(payload)) & 0xFFFF, 0xBEEF) + payload
    if version == 4:
        header = struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, (20 + len(udp)) & 0xFFFF, 0x1234, 0x4000, 64, 17, 0xAAAA,
            V4_SRC, V4_DST,
        )  # fmt: skip
        return header + udp
    header = struct.pack(">IHBB16s16s", 0x6000_0000, len(udp) & 0xFFFF, 17, 64, V6_SRC, V6_DST)
    return header + udp


def assert_valid_datagram(version: int, packet: bytes) -> bytes:
    """Check one split datagram like a receiving stack would; return its UDP payload."""
    if version == 4:
        assert reference_sum(packet[:20]) == 0xFFFF, "IPv4 header checksum"
        assert struct.unpack_from(">H", packet, 2)[0] == len(packet)
        pseudo = V4_SRC + V4_DST
        udp = packet[20:]
    else:
        assert struct.unpack_from(">H", packet, 4)[0] == len(packet) - 40
        pseudo = V6_SRC + V6_DST
        udp = packet[40:]
    length, check = struct.unpack_from(">HH", udp, 4)
    assert length == len(udp)
    assert check != 0, "a computed 0 is sent as 0xFFFF"
    pseudo += struct.pack(">HH", 17, len(udp))
    assert reference_sum(pseudo + udp) == 0xFFFF, "UDP checksum"
    return udp[8:]


@given(
    version=st.sampled_from((4, 6)),
    payload=st.binary(min_size=0, max_size=6000),
    segment=st.integers(min_value=1, max_value=1500),
)
def test_every_datagram_is_complete_and_the_payload_survives(
    version: int, payload: bytes, segment: int
) -> None:
    packet = super_packet(version, payload)
    l4 = 20 if version == 4 else 40
    pieces = split_uso(packet, l4, segment)
    assert pieces is not None
    assert len(pieces) == max(1, -(-len(payload) // segment))
    payloads = [assert_valid_datagram(version, piece) for piece in pieces]
    assert b"".join(payloads) == payload
    assert all(len(p) == segment for p in payloads[:-1])
    if version == 4:
        ids = [struct.unpack_from(">H", piece, 4)[0] for piece in pieces]
        assert ids == [(0x1234 + i) & 0xFFFF for i in range(len(pieces))]
        assert all(piece[6:8] == packet[6:8] for piece in pieces), "flags/fragment kept"


def test_what_is_not_a_udp_super_packet_is_refused() -> None:
    packet = super_packet(4, bytes(3000))
    assert split_uso(packet, 20, 0) is None  # no segment size
    assert split_uso(packet, 24, 1000) is None  # UDP not where the IP header ends
    assert split_uso(packet[:25], 20, 1000) is None  # no room for the UDP header
    tcp = bytearray(packet)
    tcp[9] = 6
    assert split_uso(bytes(tcp), 20, 1000) is None
    v6 = bytearray(super_packet(6, bytes(3000)))
    v6[6] = 0  # a hop-by-hop header first: not split here
    assert split_uso(bytes(v6), 40, 1000) is None
    assert split_uso(b"\x50" + bytes(40), 20, 1000) is None  # not IPv4 or IPv6


def test_a_checksum_that_computes_to_zero_is_sent_as_all_ones() -> None:
    # Two payload bytes chosen so the one datagram's sum is 0xFFFF, i.e. its checksum 0.
    body = bytes(range(100))
    udp_length = 8 + len(body) + 2
    pseudo = V4_SRC + V4_DST + struct.pack(">HH", 17, udp_length)
    header = struct.pack(">HHHH", 4433, 443, udp_length, 0)
    partial = reference_sum(pseudo + header + body)
    filler = struct.pack(">H", 0xFFFF - partial)
    (datagram,) = split_uso(super_packet(4, body + filler), 20, 1400) or []
    assert struct.unpack_from(">H", datagram, 26)[0] == 0xFFFF
    assert_valid_datagram(4, datagram)
