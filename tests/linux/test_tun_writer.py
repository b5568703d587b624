"""TunWriter: packets reach the fd in the order given, each counted; failures counted, not raised.

The fd is a pipe, not a TUN: the writer's concern is order and counting, and a pipe lets the
test read back exactly what was written (a TUN would hand it to the kernel instead).
"""

import contextlib
import os
from collections.abc import Iterator

import pytest

from fluxify.linux.tun_offload import (
    VIRTIO_NET_HDR,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VNET_HDR_SIZE,
    VnetTunWriter,
)
from fluxify.linux.tun_writer import TunWriter
from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.tcp_segment import split_tso
from fluxify.protocol.udp_segment import split_uso
from tests.protocol.test_tcp_segment import ACK, ipv4_packet
from tests.protocol.test_udp_segment import super_packet

PACKET_BYTES = 8


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    try:
        yield read_end, write_end
    finally:
        for fd in (read_end, write_end):
            with contextlib.suppress(OSError):  # the test may have closed it already
                os.close(fd)


def packet(number: int) -> bytes:
    return number.to_bytes(PACKET_BYTES, "big")


def written(read_end: int) -> list[int]:
    try:
        data = os.read(read_end, 1 << 16)
    except BlockingIOError:
        return []
    chunks = range(0, len(data), PACKET_BYTES)
    return [int.from_bytes(data[i : i + PACKET_BYTES], "big") for i in chunks]


def test_packets_are_written_in_the_order_given_and_counted(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer = TunWriter(write_end, DropCounters())
    writer.write(packet(1))
    writer.write_all([packet(2), packet(3)])
    assert written(read_end) == [1, 2, 3]
    assert writer.written == 3


@pytest.mark.parametrize("batched", [False, True])
def test_a_full_fd_and_a_broken_fd_are_counted_not_raised(
    pipe: tuple[int, int], batched: bool
) -> None:
    read_end, write_end = pipe
    drops = DropCounters()
    writer = TunWriter(write_end, drops)
    big = bytes(1 << 16)
    for _ in range(64):  # a pipe holds 64 KiB by default: this fills it, bounded
        if batched:
            writer.write_all([big])
        else:
            writer.write(big)
        if drops.counts[DropReason.QUEUE_FULL]:
            break
    assert drops.counts[DropReason.QUEUE_FULL] >= 1
    os.close(read_end)
    writer.write_all([packet(1)]) if batched else writer.write(packet(1))
    assert drops.counts[DropReason.SEND_FAILED] == 1
    assert writer.written < 64


def _segments(partial: bool, count: int = 3) -> list[bytes]:
    """``count`` TCP segments of one flow, the same bytes each call but for their checksums."""
    split = split_tso(ipv4_packet(bytes(range(250)) * 4 * count, ACK), 20, 1000, partial=partial)
    assert split is not None
    return split


def test_a_session_with_partial_checksums_has_the_kernel_finish_them(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    writer = VnetTunWriter(write_end, DropCounters())
    partial, complete = _segments(True, 1)[0], _segments(False, 1)[0]
    writer.write_all([partial, complete], partial=True)  # not consecutive: one by one
    data = os.read(read_end, 1 << 16)
    needs_csum = VIRTIO_NET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 16)
    assert data == needs_csum + partial + bytes(VNET_HDR_SIZE) + complete
    writer.write_all([partial], partial=True)
    assert os.read(read_end, 1 << 16) == needs_csum + partial
    writer.write_all([complete], partial=False)
    assert os.read(read_end, 1 << 16) == bytes(VNET_HDR_SIZE) + complete
    run = _segments(True)
    writer.write_all(run, partial=True)  # one flow: coalesced, as without the feature
    header = os.read(read_end, 1 << 16)[:VNET_HDR_SIZE]
    assert VIRTIO_NET_HDR.unpack(header)[:2] == (VIRTIO_NET_HDR_F_NEEDS_CSUM, 1)
    assert writer.written == 7 and writer.super_writes == 1


def test_a_plain_tun_gets_partial_checksums_finished_by_the_writer(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    writer = TunWriter(write_end, DropCounters())
    partial, complete = _segments(True, 2), _segments(False, 2)
    writer.write_all([*partial, b"not ip"], partial=True)
    assert os.read(read_end, 1 << 16) == b"".join([*complete, b"not ip"])


def test_a_refused_udp_run_turns_udp_joining_off_alone_and_loses_no_count(
    pipe: tuple[int, int],
) -> None:
    """A write error on a joined UDP run (as a kernel without GSO_UDP_L4 gives): its datagrams
    are tried one by one, each failure counted; UDP joining is off from then on, TCP's is not."""
    read_end, write_end = pipe
    drops = DropCounters()
    writer = VnetTunWriter(write_end, drops)
    run = split_uso(super_packet(4, bytes(600)), 20, 200)
    assert run is not None
    writer.write_all(run)
    assert writer.super_writes == 1 and writer.coalesce_udp
    assert VIRTIO_NET_HDR.unpack(os.read(read_end, 1 << 16)[:VNET_HDR_SIZE])[1] == 5  # UDP_L4
    os.close(read_end)  # every write fails from now on (EPIPE)
    writer.write_all(run)
    assert not writer.coalesce_udp and writer.coalesce
    assert drops.counts[DropReason.SEND_FAILED] == len(run)
    assert writer.written == len(run)
