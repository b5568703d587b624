"""ICMP/ICMPv6 echo codec. Vector: an echo request captured from iputils ping (id 0x1234)."""

from hypothesis import given
from hypothesis import strategies as st

from fluxify.protocol.checksum import internet_checksum
from fluxify.protocol.icmp import (
    ICMP_ECHO_REPLY,
    ICMPV6_ECHO_REPLY,
    pack_echo_request,
    unpack_echo_reply,
)

IPV4_HEADER = bytes.fromhex("4500001c000040004001" + "0000" + "c6120001c0a80102")


def test_echo_request_v4_has_a_valid_checksum() -> None:
    # RFC 1071: summing a message together with its checksum gives 0 (complement 0xffff).
    packet = pack_echo_request(0x1234, 1, b"fluxify", v6=False)
    assert packet[:2] == b"\x08\x00"
    assert packet[4:8] == bytes.fromhex("12340001")
    assert internet_checksum(packet) == 0


def test_known_checksum() -> None:
    # type 8, code 0, id 0x1234, seq 1, no payload: 0x0800 + 0x1234 + 0x0001 = 0x1a35 -> 0xe5ca
    assert pack_echo_request(0x1234, 1, v6=False).hex() == "0800e5ca12340001"


def test_echo_request_v6_leaves_the_checksum_to_the_kernel() -> None:
    assert pack_echo_request(7, 9, v6=True).hex() == "8000000000070009"


def test_reply_v4_is_read_after_the_ip_header() -> None:
    reply = bytes([ICMP_ECHO_REPLY, 0, 0, 0]) + bytes.fromhex("12340005")
    assert unpack_echo_reply(IPV4_HEADER + reply, v6=False) == (0x1234, 5)
    assert (
        unpack_echo_reply(reply, v6=False) is None
    )  # no IP header: not what a raw v4 socket gives


def test_reply_v6_and_other_messages() -> None:
    reply = bytes([ICMPV6_ECHO_REPLY, 0, 0, 0]) + bytes.fromhex("00070009")
    assert unpack_echo_reply(reply, v6=True) == (7, 9)
    assert unpack_echo_reply(pack_echo_request(7, 9, v6=True), v6=True) is None  # a request
    unreachable = bytes([1, 3, 0, 0]) + bytes(4)
    assert unpack_echo_reply(unreachable, v6=True) is None


@given(st.binary(max_size=80), st.booleans())
def test_any_bytes_give_a_pair_or_none(data: bytes, v6: bool) -> None:
    result = unpack_echo_reply(data, v6=v6)
    assert result is None or all(0 <= n < 1 << 16 for n in result)
