import os
import select
import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from fluxify.errors import HostError
from fluxify.linux.netlink import Netlink, NotFoundError
from fluxify.linux.tun import Tun
from tests.linux.conftest import needs_root


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo_request(src: str, dst: str, ident: int, payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        0,
        0,
        64,
        1,
        0,
        IPv4Address(src).packed,
        IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp


def icmpv6_echo_request(src: str, dst: str, ident: int, payload: bytes) -> bytes:
    source, target = IPv6Address(src).packed, IPv6Address(dst).packed
    icmp = struct.pack("!BBHHH", 128, 0, 0, ident, 1) + payload
    # RFC 4443: the checksum covers an IPv6 pseudo-header (addresses, length, next header 58).
    pseudo = source + target + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
    header = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 64) + source + target
    return header + icmp


def read_packet(tun: Tun, timeout_s: float) -> bytes:
    ready, _, _ = select.select([tun.fd], [], [], timeout_s)
    assert ready, "no packet came out of the TUN"
    return os.read(tun.fd, 65535)


@needs_root
def test_named_tun_exists_until_closed(netns: str) -> None:
    with Netlink(netns) as netlink:
        with Tun.open("fxtest0", netns=netns) as tun:
            assert tun.name == "fxtest0"
            assert netlink.index("fxtest0") > 0
            with pytest.raises(BlockingIOError):
                os.read(tun.fd, 2048)  # non-blocking and empty
        with pytest.raises(NotFoundError):
            netlink.index("fxtest0")


@needs_root
def test_kernel_names_the_tun_when_no_name_is_given(netns: str) -> None:
    with Tun.open(netns=netns) as first, Tun.open(netns=netns) as second:
        assert first.name.startswith("tun") and second.name.startswith("tun")
        assert first.name != second.name
        with Netlink(netns) as netlink:
            assert {first.name, second.name} <= {link.ifname for link in netlink.links()}


def test_too_long_name_is_refused() -> None:
    with pytest.raises(HostError, match="too long"):
        Tun.open("a-name-far-too-long-for-linux")


@needs_root
def test_echo_request_written_to_tun_comes_back_as_reply(netns: str) -> None:
    with Tun.open("fxtest1", netns=netns) as tun, Netlink(netns) as netlink:
        netlink.set_link("fxtest1", up=True, mtu=1400)
        netlink.add_address("fxtest1", "10.99.0.1/24")
        payload = b"fluxify tun test"
        os.write(tun.fd, icmp_echo_request("10.99.0.2", "10.99.0.1", 0x4242, payload))
        for _ in range(10):  # skip anything else the kernel sends (bounded)
            reply = read_packet(tun, 2.0)
            if reply[0] >> 4 == 4 and reply[9] == 1 and reply[20] == 0:
                break
        else:
            pytest.fail("no ICMP echo reply came out of the TUN")
        assert reply[12:16] == IPv4Address("10.99.0.1").packed
        assert reply[16:20] == IPv4Address("10.99.0.2").packed
        assert struct.unpack("!H", reply[24:26])[0] == 0x4242
        assert reply[28:] == payload
        assert netlink.link("fxtest1").mtu == 1400


@needs_root
def test_icmpv6_echo_through_the_tun(netns: str) -> None:
    with Tun.open("fxtest6", netns=netns) as tun, Netlink(netns) as netlink:
        netlink.set_link("fxtest6", up=True)
        netlink.add_address("fxtest6", "fd00:99::1/64", nodad=True)
        payload = b"fluxify tun v6"
        request = icmpv6_echo_request("fd00:99::2", "fd00:99::1", 0x4343, payload)
        # A request written while the kernel is still bringing IPv6 up on the fresh link is
        # dropped: ask again until the reply comes (bounded), skipping router solicitations and
        # MLD reports.
        reply = b""
        for _ in range(20):
            os.write(tun.fd, request)
            ready, _, _ = select.select([tun.fd], [], [], 1.0)
            while ready:
                reply = os.read(tun.fd, 65535)
                if reply[0] >> 4 == 6 and reply[6] == 58 and reply[40] == 129:
                    break
                ready, _, _ = select.select([tun.fd], [], [], 0.2)
            else:
                continue
            break
        else:
            pytest.fail("no ICMPv6 echo reply came out of the TUN")
        assert reply[24:40] == IPv6Address("fd00:99::2").packed
        assert struct.unpack("!H", reply[44:46])[0] == 0x4343
        assert reply[48:] == payload
