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
from fluxify.protocol.tcp_segment import partial_tcp, split_tso
from fluxify.protocol.udp_segment import split_uso
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


def model_checksum(data: bytes) -> int:
    return ~model_sum(data) & 0xFFFF


def _syn(src: str, dst: str, port: int) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", 40000, port, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        40,
        1,
        0x4000,
        64,
        6,
        0,
        *(socket.inet_aton(a) for a in (src, dst)),
    )
    header = header[:10] + struct.pack(">H", model_checksum(header)) + header[12:]
    return header + tcp


def _tcp_reply(reader: TunReader) -> bytes:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for packet in reader.read(64):
            if packet[0] == 0x45 and packet[9] == 6:
                return packet
        time.sleep(0.01)
    raise AssertionError("no TCP packet came out of the TUN")


@needs_root
def test_partial_tcp_checksums_in_and_out_of_a_real_tun(fg_netns: str) -> None:
    """Feature csum-partial against the kernel: a SYN written with its pseudo-header sum and
    NEEDS_CSUM is taken (a SYN-ACK comes back), and the SYN-ACK the stack left partial stays so
    when its peer takes that, and comes out complete when not."""
    with Tun.open("fgtun3", extra_flags=IFF_VNET_HDR, netns=fg_netns) as tun:
        assert tun_offload.enable_offloads(tun.fd)[0]
        ip("-n", fg_netns, "addr", "add", "10.77.3.1/24", "dev", "fgtun3")
        ip("-n", fg_netns, "link", "set", "fgtun3", "up")
        drops = DropCounters()
        reader = TunReader(tun.fd, drops)
        writer = VnetTunWriter(tun.fd, drops)
        reader.read(64)  # whatever the link brought up

        def listen() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("10.77.3.1", 5555))
            sock.listen()
            return sock

        with NetnsThread(fg_netns) as thread, thread.call(listen):
            complete_syn = _syn("10.77.3.2", "10.77.3.1", 5555)
            split = split_tso(complete_syn, 20, 1400, partial=True)
            assert split is not None
            (partial_syn,) = split
            assert partial_tcp(partial_syn) == 20 and partial_syn != complete_syn
            reader.partial_for = tun_offload.any_destination
            writer.write_all([partial_syn], partial=True)
            synack = _tcp_reply(reader)
            assert synack[33] == 0x12  # SYN ACK: the kernel took the partial SYN
            assert partial_tcp(synack) == 20
            assert reader.partial_packets == 1
            reader.partial_for = None  # a peer without the feature: completed on read
            writer.write_all([complete_syn])  # the same SYN again: the SYN-ACK is sent again
            again = _tcp_reply(reader)
            assert again[33] == 0x12
            pseudo = again[12:20] + struct.pack(">BBH", 0, 6, len(again) - 20)
            assert model_sum(pseudo + again[20:]) == 0xFFFF  # complete: the checksum verifies
            assert reader.partial_packets == 1


def _udp_datagrams(src: str, dst: str, port: int, payload: bytes, size: int) -> list[bytes]:
    """Datagrams ``src`` → ``dst``:``port`` carrying ``payload`` in ``size``-byte pieces, with
    complete checksums (cut by ``split_uso`` from one super-packet)."""
    v6 = ":" in src
    family = socket.AF_INET6 if v6 else socket.AF_INET
    addresses = socket.inet_pton(family, src) + socket.inet_pton(family, dst)
    udp = struct.pack(">HHHH", 40000, port, 8 + len(payload), 0) + payload
    if v6:
        whole = struct.pack(">IHBB", 0x6000_0000, len(udp), 17, 64) + addresses + udp
    else:
        whole = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(udp), 7, 0x4000, 64, 17, 0) + addresses
        whole += udp
    packets = split_uso(whole, 40 if v6 else 20, size)
    assert packets is not None
    return packets


@needs_root
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_coalesced_udp_datagrams_reach_a_socket_as_the_datagrams_they_were(
    fg_netns: str, v6: bool
) -> None:
    """A run of one flow's datagrams (and a shorter last one) written as one GSO_UDP_L4
    super-packet: the stack cuts it back, and the socket receives every datagram, in order, byte
    for byte; a datagram of another flow in between is written on its own."""
    with Tun.open("fgtun4", extra_flags=IFF_VNET_HDR, netns=fg_netns) as tun:
        _tso, uso = tun_offload.enable_offloads(tun.fd)
        if not uso:
            pytest.skip("this kernel has no TUN USO (Linux 6.2+)")
        local, peer = ("fd77:4::1", "fd77:4::2") if v6 else ("10.77.4.1", "10.77.4.2")
        prefix = "64" if v6 else "24"
        ip("-n", fg_netns, "addr", "add", f"{local}/{prefix}", "dev", "fgtun4", "nodad")
        ip("-n", fg_netns, "link", "set", "fgtun4", "up")
        writer = VnetTunWriter(tun.fd, DropCounters())

        def bind(port: int) -> socket.socket:
            sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((local, port))
            sock.settimeout(5)
            return sock

        payload = os.urandom(200 * 11 + 57)
        run = _udp_datagrams(peer, local, 6000, payload, 200)
        other = _udp_datagrams(peer, local, 6001, b"another flow", 200)
        with (
            NetnsThread(fg_netns) as thread,
            thread.call(bind, 6000) as a,
            thread.call(bind, 6001) as b,
        ):
            writer.write_all(run[:5] + other + run[5:])
            got = [a.recv(2048) for _ in run]
            assert b.recv(2048) == b"another flow"
        assert got == [p[28 + (20 if v6 else 0) :] for p in run]
        assert b"".join(got) == payload
        assert writer.super_writes == 2 and writer.written == len(run) + 1
        assert writer.coalesce_udp  # the kernel took them
