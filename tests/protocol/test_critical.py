"""Which inner packets the bond duplicates (protocol/critical.py), on crafted IPv4/IPv6."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.protocol.critical import is_critical

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def v4(proto: int, l4: bytes, frag: int = 0) -> bytes:
    total = 20 + len(l4)
    return (
        struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 1, frag, 64, proto, 0, bytes(4), bytes(4)) + l4
    )


def v6(proto: int, l4: bytes) -> bytes:
    return struct.pack(">IHBB16s16s", 6 << 28, len(l4), proto, 64, bytes(16), bytes(16)) + l4


def tcp(flags: int, payload: bytes = b"", dport: int = 443) -> bytes:
    return struct.pack(">HHIIBBHHH", 40000, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = bytes(16)) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(kind: int) -> bytes:
    return struct.pack(">BBHHH", kind, 0, 0, 1, 1) + bytes(32)


CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01" + bytes(40)


@pytest.mark.parametrize("ip", [v4, v6], ids=["v4", "v6"])
@pytest.mark.parametrize(
    ("proto", "l4", "critical"),
    [
        (6, tcp(SYN), True),
        (6, tcp(SYN | ACK), True),
        (6, tcp(FIN | ACK), True),
        (6, tcp(RST), True),
        (6, tcp(ACK), False),
        (6, tcp(ACK | PSH, bytes(1000)), False),
        (6, tcp(ACK | PSH, CLIENT_HELLO), True),
        (17, udp(40000, 53), True),
        (17, udp(53, 40000), True),
        (17, udp(40000, 443, b"\xc3" + bytes(40)), True),  # QUIC long header (Initial)
        (17, udp(40000, 443, b"\x43" + bytes(40)), False),  # QUIC short header: bulk
        (17, udp(40000, 8443, b"\xc3" + bytes(40)), False),
        (17, udp(40000, 6000, bytes(1000)), False),
    ],
    ids=[
        "syn", "syn-ack", "fin", "rst", "ack", "bulk-tcp", "tls-client-hello", "dns-query",
        "dns-answer", "quic-initial", "quic-short", "quic-other-port", "bulk-udp",
    ],
)  # fmt: skip
def test_tcp_and_udp(ip: object, proto: int, l4: bytes, critical: bool) -> None:
    assert is_critical(ip(proto, l4)) is critical  # type: ignore[operator]


@pytest.mark.parametrize(
    ("packet", "critical"),
    [
        (v4(1, icmp(8)), True),
        (v4(1, icmp(0)), True),
        (v4(1, icmp(3)), False),  # destination unreachable
        (v6(58, icmp(128)), True),
        (v6(58, icmp(129)), True),
        (v6(58, icmp(135)), False),  # neighbour solicitation
        (v6(1, icmp(8)), False),  # ICMPv4 numbers inside IPv6 mean nothing
    ],
)
def test_icmp_echo(packet: bytes, critical: bool) -> None:
    assert is_critical(packet) is critical


def test_a_later_fragment_is_never_critical_the_first_one_carries_the_ports() -> None:
    assert is_critical(v4(17, udp(40000, 53), frag=0x2000)) is True  # MF, offset 0
    assert is_critical(v4(17, udp(40000, 53), frag=185)) is False  # offset 185 x 8 bytes


@pytest.mark.parametrize("build", [lambda: v4(6, tcp(SYN)), lambda: v6(17, udp(1, 53))])
def test_truncated_packets_never_raise(build: object) -> None:
    packet = build()  # type: ignore[operator]
    for end in range(len(packet)):
        assert is_critical(packet[:end]) in (True, False)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert is_critical(data) in (True, False)


@settings(max_examples=800)
@given(
    flags=st.integers(0, 255),
    options=st.integers(0, 10),
    payload=st.one_of(st.binary(max_size=3), st.just(CLIENT_HELLO), st.just(b"\x16\x01")),
    frag=st.sampled_from([0, 0x2000, 185, 0x2000 | 185]),
)
def test_tcp_over_ipv4_by_flags_payload_and_fragment(
    flags: int, options: int, payload: bytes, frag: int
) -> None:
    """Whatever the TCP header length (options move the payload) and flags: SYN, FIN or RST,
    or a payload that opens a TLS handshake record, is critical, unless the packet is a later
    fragment (its bytes there are not a TCP header)."""
    header = bytearray(tcp(flags, dport=8080))
    header[12] = (5 + options) << 4
    packet = v4(6, bytes(header) + bytes(4 * options) + payload, frag=frag)
    later_fragment = frag & 0x1FFF != 0
    expected = not later_fragment and (
        bool(flags & (SYN | FIN | RST)) or payload.startswith(b"\x16\x03")
    )
    assert is_critical(packet) is expected
