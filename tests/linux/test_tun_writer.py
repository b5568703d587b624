"""InOrderTunWriter: received packets reach the fd in sequence order, held ones by its timer.

The fd is a pipe, not a TUN: the writer's concern is order, timing and counting, and a pipe
lets the test read back exactly what was written (a TUN would hand it to the kernel instead).
"""

import asyncio
import contextlib
import os
from collections.abc import Iterator

import pytest

from fluxify.linux.tun_writer import InOrderTunWriter
from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.reorder import ReorderBuffer

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


def test_in_order_packets_are_written_at_once_and_a_gap_waits_for_its_packet(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    writer = InOrderTunWriter(write_end, DropCounters(), clock=lambda: 0.0)
    buffer = ReorderBuffer(hold_s=1.0)
    for seq in (1, 2):
        writer.deliver(buffer, seq, packet(seq), now=0.0)
    assert written(read_end) == [1, 2]
    writer.deliver(buffer, 4, packet(4), now=0.0)
    writer.deliver(buffer, 5, packet(5), now=0.0)
    assert written(read_end) == []
    writer.deliver(buffer, 3, packet(3), now=0.0)
    assert written(read_end) == [3, 4, 5]
    assert writer.written == 5


async def test_the_timer_gives_up_a_gap_after_the_hold_and_then_stops(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    loop = asyncio.get_running_loop()
    writer = InOrderTunWriter(write_end, DropCounters(), clock=loop.time)
    writer.attach(loop)
    try:
        buffer = ReorderBuffer(hold_s=0.02)
        writer.deliver(buffer, 1, packet(1), loop.time())
        writer.deliver(buffer, 3, packet(3), loop.time())  # 2 never comes
        assert written(read_end) == [1]
        released: list[int] = []
        for _ in range(100):  # bounded: at most 1 s
            await asyncio.sleep(0.01)
            released += written(read_end)
            if released:
                break
        assert released == [3]
        assert buffer.skipped_gaps == 1
        await asyncio.sleep(0.02)
        assert writer._timer is None  # nothing held: no timer left ticking
    finally:
        writer.detach()


def test_flush_writes_everything_held_and_forget_drops_it(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer = InOrderTunWriter(write_end, DropCounters(), clock=lambda: 0.0)
    ending, gone = ReorderBuffer(hold_s=1.0), ReorderBuffer(hold_s=1.0)
    for buffer in (ending, gone):
        writer.deliver(buffer, 1, packet(1), now=0.0)
    written(read_end)
    writer.deliver(ending, 4, packet(4), now=0.0)
    writer.deliver(ending, 3, packet(3), now=0.0)
    writer.deliver(gone, 9, packet(9), now=0.0)
    writer.flush(ending)
    writer.forget(gone)
    assert written(read_end) == [3, 4]
    assert writer._holding == set()


def test_a_full_fd_and_a_broken_fd_are_counted_not_raised(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    drops = DropCounters()
    writer = InOrderTunWriter(write_end, drops)
    big = bytes(1 << 16)
    for _ in range(64):  # a pipe holds 64 KiB by default: this fills it, bounded
        writer.write(big)
        if drops.counts[DropReason.QUEUE_FULL]:
            break
    assert drops.counts[DropReason.QUEUE_FULL] >= 1
    os.close(read_end)
    writer.write(packet(1))
    assert drops.counts[DropReason.SEND_FAILED] == 1
