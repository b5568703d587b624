"""Malformed TUN super-packets: a bad virtio-net header or a packet that does not fit it is
dropped and counted, never raised and never passed on as if it were split.

``split_tso`` is pure and refuses what does not parse (None); the TUN reader counts every
refused read. The reader runs over a non-blocking Unix datagram socket pair standing in for a
vnet TUN (each send is read back as one packet), so everything here runs in memory.
"""

import random
import socket
import struct
from collections.abc import Iterator

import pytest

from fluxify.linux import tun_offload
from fluxify.linux.tun_offload import (
    VIRTIO_NET_HDR,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    TunReader,
)
from fluxify.protocol.drops import DropCounters
from fluxify.protocol.tcp_segment import split_tso

ACK = 0x10
UDP = 17
GSO_UDP = 3  # VIRTIO_NET_HDR_GSO_UDP (UFO): not a type the reader splits
GSO_UNKNOWN = 0x7F


def ipv4_tcp(payload: bytes) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", 40000, 5201, 1, 77, 5 << 4, ACK, 512, 0, 0) + payload
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, b"\n\x08\0\2", b"\xcb\0q\t"
    )
    return ip + tcp


def ipv6(next_header: int, l4: bytes) -> bytes:
    src, dst = b"\xfd" + bytes(14) + b"\2", b"\x20\x01\x0d\xb8" + bytes(11) + b"\x09"
    return struct.pack(">IHBB16s16s", 0x60000000, len(l4), next_header, 64, src, dst) + l4


def udp_datagram(payload: bytes) -> bytes:
    return struct.pack(">HHHH", 5353, 5353, 8 + len(payload), 0) + payload


# A UDP payload whose 13th byte reads like a TCP data offset of 5 words: parsed as TCP it
# would pass every length check.
UDP_LOOKING_LIKE_TCP = udp_datagram(bytes(4) + b"\x50" + bytes(3000))


def test_an_ipv6_packet_that_is_not_tcp_is_not_split_as_tcp() -> None:
    assert split_tso(ipv6(UDP, UDP_LOOKING_LIKE_TCP), 40, 1000) is None


def test_an_ipv6_extension_header_chain_is_refused() -> None:
    # Hop-by-hop options (next header 0, 8 bytes) before the TCP header: the split would have
    # to rewrite lengths it does not know; Linux does not hand such a packet to a TUN as TSO.
    tcp = ipv4_tcp(bytes(3000))[20:]
    hop_by_hop = bytes([6, 0]) + bytes(6)
    assert split_tso(ipv6(0, hop_by_hop + tcp), 48, 1000) is None


def test_headers_longer_than_the_packet_and_truncated_headers_are_refused() -> None:
    good = ipv4_tcp(bytes(3000))
    assert split_tso(good, 20, 1000) is not None
    assert split_tso(good[:20], 20, 1000) is None  # no TCP header at all
    assert split_tso(good[:39], 20, 1000) is None  # one byte short of it
    assert split_tso(b"", 20, 1000) is None
    assert split_tso(good[:10], 20, 1000) is None  # not even an IP header
    long_options = bytearray(good[:60])
    long_options[32] = 15 << 4  # a 60-byte TCP header in a 40-byte packet's TCP part
    assert split_tso(bytes(long_options), 20, 1000) is None
    short_offset = bytearray(good)
    short_offset[32] = 4 << 4  # data offset below the 20-byte minimum
    assert split_tso(bytes(short_offset), 20, 1000) is None
    short_ihl = bytearray(good)
    short_ihl[0] = 0x44  # IHL 4: an IPv4 header below its minimum
    assert split_tso(bytes(short_ihl), 16, 1000) is None
    assert split_tso(good, 65535, 1000) is None  # csum_start far beyond the packet


def test_no_input_makes_the_split_raise() -> None:
    rng = random.Random(12)
    seeds = [ipv4_tcp(bytes(range(256)) * 12), ipv6(6, ipv4_tcp(bytes(2000))[20:])]
    seeds.append(ipv6(UDP, UDP_LOOKING_LIKE_TCP))
    for _ in range(20_000):
        packet = bytearray(rng.choice(seeds)[: rng.randrange(0, 3100)])
        for _ in range(rng.randrange(0, 4)):
            if packet:
                packet[rng.randrange(min(len(packet), 80))] = rng.randrange(256)
        l4 = rng.choice((0, 16, 20, 24, 40, 48, 60, rng.randrange(0, 70000)))
        mss = rng.choice((0, 1, 7, 536, 1348, 65535))
        pieces = split_tso(bytes(packet), l4, mss)
        if pieces is not None:
            assert all(len(piece) <= l4 + 60 + mss for piece in pieces)


@pytest.fixture
def vnet_pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TunReader, socket.socket]]:
    """A TunReader over a socket it takes for a vnet TUN, and the socket that writes to it."""
    tun_end, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tun_end.setblocking(False)
    monkeypatch.setattr(tun_offload, "has_vnet_header", lambda fd: True)
    with tun_end, writer:
        yield TunReader(tun_end.fileno(), DropCounters()), writer


def vnet(gso_type: int, gso_size: int, csum_start: int, packet: bytes, flags: int = 1) -> bytes:
    header = VIRTIO_NET_HDR.pack(flags, gso_type, 0, gso_size, csum_start, 16)
    return header + packet


GOOD_V4 = ipv4_tcp(bytes(3000))
MALFORMED = {
    "gso_size 0": vnet(VIRTIO_NET_HDR_GSO_TCPV4, 0, 20, GOOD_V4),
    "csum_start beyond the packet": vnet(VIRTIO_NET_HDR_GSO_TCPV4, 1000, 4000, GOOD_V4),
    "truncated TCP header": vnet(VIRTIO_NET_HDR_GSO_TCPV4, 1000, 20, GOOD_V4[:30]),
    "UDP behind GSO_TCPV4": vnet(
        VIRTIO_NET_HDR_GSO_TCPV4, 1000, 20, GOOD_V4[:9] + bytes([UDP]) + GOOD_V4[10:]
    ),
    "UDP behind GSO_TCPV6": vnet(
        VIRTIO_NET_HDR_GSO_TCPV6, 1000, 40, ipv6(UDP, UDP_LOOKING_LIKE_TCP)
    ),
    "gso_type UDP (UFO)": vnet(GSO_UDP, 1000, 20, GOOD_V4),
    "unknown gso_type": vnet(GSO_UNKNOWN, 1000, 20, GOOD_V4),
    "NEEDS_CSUM offset beyond the packet": vnet(0, 0, 4000, GOOD_V4, VIRTIO_NET_HDR_F_NEEDS_CSUM),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_super_packet_is_dropped_and_counted(
    vnet_pipe: tuple[TunReader, socket.socket], case: str
) -> None:
    reader, writer = vnet_pipe
    writer.send(MALFORMED[case])
    writer.send(vnet(VIRTIO_NET_HDR_GSO_TCPV4, 1000, 20, GOOD_V4))  # a good one after
    packets = reader.read(64)
    assert len(packets) == 3, case  # only the good super-packet's three segments
    assert reader.drops.total() == 1, (case, reader.drops.snapshot())


@pytest.mark.parametrize("case", ["gso_size 0", "unknown gso_type"])
def test_a_malformed_super_packet_has_its_own_drop_reason(
    vnet_pipe: tuple[TunReader, socket.socket], case: str
) -> None:
    reader, writer = vnet_pipe
    writer.send(MALFORMED[case])
    reader.read(64)
    assert reader.drops.snapshot() == {"bad_super_packet": 1}


@pytest.mark.parametrize("size", [1, 9, 10])
def test_a_read_no_longer_than_the_vnet_header_is_counted(
    vnet_pipe: tuple[TunReader, socket.socket], size: int
) -> None:
    reader, writer = vnet_pipe
    writer.send(bytes(size))
    assert reader.read(64) == []
    assert reader.drops.total() == 1
