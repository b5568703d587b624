"""UDP GSO runs and GRO reads over loopback in a throwaway namespace: every datagram arrives
once, in order, byte for byte; equal-size neighbours share one call; a coalesced read splits back
into the datagrams that were sent."""

import os
import socket
from collections.abc import Iterator

import pytest

from fluxify.linux import udp_offload
from fluxify.linux.netns import NetnsThread
from fluxify.linux.udp_offload import UdpSender, gro_segment_size, split_gro
from fluxify.protocol.drops import DropCounters
from tests.linux.conftest import ip, needs_root, throwaway_netns


@pytest.fixture
def fg_netns() -> Iterator[str]:
    with throwaway_netns("fg-udp") as name:
        yield name


def _pair(netns: str) -> tuple[socket.socket, socket.socket]:
    def make() -> tuple[socket.socket, socket.socket]:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return sender, receiver

    with NetnsThread(netns) as thread:
        return thread.call(make)


def _drain(sock: socket.socket, *, gro: bool) -> list[bytes]:
    sock.settimeout(0.5)
    got: list[bytes] = []
    buf = bytearray(udp_offload.GRO_BUFFER_BYTES)
    try:
        while True:
            size, ancdata, _flags, _addr = sock.recvmsg_into([buf], udp_offload.GRO_SPACE)
            data = bytes(buf[:size])
            got += split_gro(data, gro_segment_size(ancdata)) if gro else [data]
            sock.settimeout(0.05)
    except TimeoutError:
        pass
    return got


def _datagrams(sizes: list[int]) -> list[bytes]:
    return [os.urandom(size) for size in sizes]


@needs_root
def test_equal_runs_go_in_one_call_each_and_arrive_in_order(fg_netns: str) -> None:
    sender, receiver = _pair(fg_netns)
    with sender, receiver:
        assert udp_offload.gso_supported(sender)
        drops = DropCounters()
        gso = UdpSender(sender, drops.counts, gso=True)
        sent = _datagrams([300] * 5 + [120] + [300] * 3 + [1400] * 70)
        gso.send(sent, receiver.getsockname(), [])
        assert _drain(receiver, gro=False) == sent  # the kernel cut every super-datagram
        # 5 of 300 closed by the shorter 120; 3 of 300; of 1400 B 46 fit in 64 KiB, then 24.
        assert gso.calls == 4
        assert gso.datagrams == len(sent)
        assert drops.total() == 0


@needs_root
def test_a_coalesced_read_splits_back_into_the_datagrams(fg_netns: str) -> None:
    sender, receiver = _pair(fg_netns)
    with sender, receiver:
        assert udp_offload.enable_gro(receiver)
        gso = UdpSender(sender, DropCounters().counts, gso=True)
        sent = _datagrams([1000] * 20 + [77])
        gso.send(sent, receiver.getsockname(), [])
        assert gso.calls == 1
        assert _drain(receiver, gro=True) == sent


@needs_root
def test_without_gso_every_datagram_is_its_own_call(fg_netns: str) -> None:
    sender, receiver = _pair(fg_netns)
    with sender, receiver:
        plain = UdpSender(sender, DropCounters().counts, gso=False)
        sent = _datagrams([500] * 7)
        plain.send(sent, receiver.getsockname(), [])
        assert plain.calls == 7
        assert _drain(receiver, gro=False) == sent


def test_split_gro_cuts_every_segment_and_keeps_a_short_tail() -> None:
    data = bytes(range(250))
    assert split_gro(data, 100) == [data[:100], data[100:200], data[200:]]
    assert split_gro(data, 0) == [data]
    assert split_gro(data, 250) == [data]


def test_no_offload_env_turns_gso_and_gro_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(udp_offload.NO_OFFLOAD_ENV, "1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert not udp_offload.gso_supported(sock)
        assert not udp_offload.enable_gro(sock)


@needs_root
def test_a_refused_segmented_send_falls_back_to_one_datagram_per_call(fg_netns: str) -> None:
    ip("-n", fg_netns, "link", "set", "lo", "mtu", "1200")  # segments above the MTU: EINVAL
    sender, receiver = _pair(fg_netns)
    with sender, receiver:
        drops = DropCounters()
        gso = UdpSender(sender, drops.counts, gso=True)
        sent = _datagrams([1400] * 5 + [300] * 3)
        gso.send(sent, receiver.getsockname(), [])
        assert not gso.gso
        assert _drain(receiver, gro=False) == sent  # fragmented, but each one arrived
        assert drops.total() == 0
