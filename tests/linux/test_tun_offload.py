"""The vnet TUN for real, in a throwaway namespace: what the stack sends with a partial checksum
comes out of TunReader complete; a plain TUN and anything that is not a TUN read plainly."""

import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from fluxify.linux import tun_offload
from fluxify.linux.netns import NetnsThread
from fluxify.linux.tun import IFF_VNET_HDR, Tun
from fluxify.linux.tun_offload import TunReader, VnetTunWriter, tun_writer
from fluxify.protocol.drops import DropCounters
from tests.linux.conftest import ip, needs_root, throwaway_netns
from tests.protocol.test_tcp_segment import model_sum


@pytest.fixture
def fg_netns() -> Iterator[str]:
    with throwaway_netns("fg-tun") as name:
        yield name


def _read_until(reader: TunReader, want: int) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(got) < want and time.monotonic() < deadline:
        got += reader.read(64)
        time.sleep(0.01)
    return got


@needs_root
def test_a_partial_udp_checksum_is_completed_on_read(fg_netns: str) -> None:
    with Tun.open("fgtun0", extra_flags=IFF_VNET_HDR, netns=fg_netns) as tun:
        assert tun_offload.has_vnet_header(tun.fd)
        assert tun_offload.enable_offloads(tun.fd)[0]
        ip("-n", fg_netns, "addr", "add", "10.77.0.1/24", "dev", "fgtun0")
        ip("-n", fg_netns, "link", "set", "fgtun0", "up")
        reader = TunReader(tun.fd, DropCounters())
        reader.read(64)  # whatever the link brought up

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(os.urandom(1001), ("10.77.0.2", 9))

        with NetnsThread(fg_netns) as thread:
            thread.call(send)
        packets = [p for p in _read_until(reader, 1) if p[9] == 17]
        assert len(packets) == 1
        packet = packets[0]
        assert len(packet) == 20 + 8 + 1001
        pseudo = packet[12:20] + struct.pack(">BBH", 0, 17, len(packet) - 20)
        assert model_sum(pseudo + packet[20:]) == 0xFFFF  # the checksum verifies


@needs_root
def test_a_plain_tun_and_a_pipe_read_and_write_plain_packets(fg_netns: str) -> None:
    with Tun.open("fgtun1", netns=fg_netns) as tun:
        assert not tun_offload.has_vnet_header(tun.fd)
        assert not TunReader(tun.fd, DropCounters()).vnet
        assert not isinstance(tun_writer(tun.fd, DropCounters()), VnetTunWriter)
    read_end, write_end = os.pipe()
    try:
        assert not tun_offload.has_vnet_header(write_end)
        writer = tun_writer(write_end, DropCounters())
        writer.write_all([b"\x45" + bytes(19)])
        assert os.read(read_end, 100) == b"\x45" + bytes(19)
    finally:
        os.close(read_end)
        os.close(write_end)


UDP_SEGMENT = 103  # linux/udp.h: the GSO segment size of a UDP send


@needs_root
def test_a_udp_gso_send_comes_out_as_complete_datagrams(fg_netns: str) -> None:
    """An application's UDP_SEGMENT send (QUIC does this) reaches a USO TUN as one super-packet;
    TunReader splits it into datagrams each with its own length and a complete checksum."""
    with Tun.open("fgtun2", extra_flags=IFF_VNET_HDR, netns=fg_netns) as tun:
        tso, uso = tun_offload.enable_offloads(tun.fd)
        assert tso
        if not uso:
            pytest.skip("this kernel has no TUN USO (Linux 6.2+)")
        ip("-n", fg_netns, "addr", "add", "10.77.2.1/24", "dev", "fgtun2")
        ip("-n", fg_netns, "link", "set", "fgtun2", "up")
        reader = TunReader(tun.fd, DropCounters())
        reader.read(64)  # whatever the link brought up
        payload = os.urandom(3500)

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1200)
                sock.sendto(payload, ("10.77.2.2", 9))

        with NetnsThread(fg_netns) as thread:
            thread.call(send)
        packets = [p for p in _read_until(reader, 3) if p[9] == 17]
        assert reader.super_packets == 1
        assert [len(p) - 28 for p in packets] == [1200, 1200, 1100]
        for packet in packets:
            pseudo = packet[12:20] + struct.pack(">BBH", 0, 17, len(packet) - 20)
            assert model_sum(pseudo + packet[20:]) == 0xFFFF  # the checksum verifies
            assert model_sum(packet[:20]) == 0xFFFF
        assert b"".join(p[28:] for p in packets) == payload
