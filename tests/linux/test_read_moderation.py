"""Read moderation: the decision on a virtual clock, the asyncio adapter over a real UDP socket."""

import asyncio
import socket
from collections.abc import Callable, Iterator

import pytest

from fluxify.linux.read_moderation import (
    BATCH_TARGET,
    IDLE_GAP_S,
    MAX_HOLD_S,
    MAX_RATE,
    MIN_RATE,
    NO_MODERATION_ENV,
    RATE_WINDOW_S,
    ModeratedReaders,
    ReadModeration,
)


def stream(
    moderation: ReadModeration, per_read: int, every_s: float, seconds: float, start: float = 0.0
) -> list[float | None]:
    """Reads of ``per_read`` datagrams every ``every_s`` for ``seconds``; the decisions."""
    reads = round(seconds / every_s)
    return [moderation.after_read(per_read, start + i * every_s) for i in range(reads)]


# -- the decision ---------------------------------------------------------------------------


def test_a_steady_stream_of_small_reads_is_read_on_a_timer_after_one_window() -> None:
    m = ReadModeration()
    decisions = stream(m, per_read=2, every_s=0.00025, seconds=0.05)  # 8 000 datagrams/s
    first_timed = next(i for i, d in enumerate(decisions) if d is not None)
    assert first_timed * 0.00025 == pytest.approx(RATE_WINDOW_S, abs=0.0005)
    assert m.rate == pytest.approx(8000, rel=0.05)
    assert set(decisions[first_timed:]) == {MAX_HOLD_S}


def test_full_reads_slow_streams_and_cpu_bound_streams_wait_for_the_fd() -> None:
    busy = ReadModeration()
    assert set(stream(busy, per_read=BATCH_TARGET, every_s=0.002, seconds=0.05)) == {None}
    slow = ReadModeration()  # 1 000 datagrams/s: a hold would gather one
    assert set(stream(slow, per_read=1, every_s=0.001, seconds=0.1)) == {None}
    assert slow.rate == pytest.approx(1000, rel=0.05)
    fast = ReadModeration()  # 40 000 datagrams/s in small reads: a CPU-bound pipeline
    assert set(stream(fast, per_read=8, every_s=0.0002, seconds=0.05)) == {None}
    assert fast.rate == pytest.approx(40_000, rel=0.05)
    assert MIN_RATE < 8000 < MAX_RATE < 40_000


def test_an_empty_read_ends_the_timed_reads() -> None:
    m = ReadModeration()
    assert stream(m, per_read=2, every_s=0.00025, seconds=0.05)[-1] is not None
    assert m.after_read(0, 0.0502) is None


def test_after_a_pause_the_rate_is_measured_again_before_anything_is_held() -> None:
    m = ReadModeration()
    assert stream(m, per_read=2, every_s=0.00025, seconds=0.05)[-1] is not None
    resumed = 0.05 + IDLE_GAP_S + 0.001
    assert m.after_read(1, resumed) is None  # a ping after a download: not followed by a hold
    assert m.rate == 0.0
    window = int(RATE_WINDOW_S / 0.00025) - 1
    again = stream(m, per_read=2, every_s=0.00025, seconds=0.05, start=resumed + 0.00025)
    assert again[:window] == [None] * window
    assert again[-1] == MAX_HOLD_S


# -- the adapter over a real socket ----------------------------------------------------------


class Scripted(ReadModeration):
    """A moderation that answers ``holds`` in turn, then None (the adapter's mechanics alone)."""

    def __init__(self, holds: list[float | None]) -> None:
        super().__init__()
        self.holds = holds

    def after_read(self, read: int, now: float) -> float | None:
        return self.holds.pop(0) if self.holds else None


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        sender.connect(receiver.getsockname())
        yield receiver, sender
    finally:
        receiver.close()
        sender.close()


class Drain:
    """Reads everything waiting; records how many datagrams each call read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.calls: list[int] = []

    def __call__(self) -> int:
        read = 0
        while True:
            try:
                self.sock.recv(2048)
            except BlockingIOError:
                break
            read += 1
        self.calls.append(read)
        return read


def scripted(receiver: socket.socket, holds: list[float | None]) -> tuple[Drain, ModeratedReaders]:
    """A drain of ``receiver`` behind readers whose moderation answers ``holds``."""
    drain = Drain(receiver)
    readers = ModeratedReaders([receiver.fileno()], drain)
    readers.enabled = True  # whatever the environment of the test run says
    readers.moderation = Scripted(holds)
    return drain, readers


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):  # bounded: 5 s at most
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_while_held_the_socket_is_read_by_the_timer_then_watched_again(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    drain, readers = scripted(receiver, [1.0])  # hold after the first read (long: a loaded box)
    loop = asyncio.get_running_loop()
    readers.attach(loop)
    try:
        sender.send(b"one")
        await until(lambda: drain.calls == [1], "the first datagram")
        assert readers.timed
        for _ in range(3):  # arrive while the fd is not watched: nothing wakes for them ...
            sender.send(b"later")
        await until(lambda: len(drain.calls) == 2, "the timed read")
        assert drain.calls == [1, 3]  # ... the timer reads all three at once
        assert not readers.timed
        sender.send(b"after")  # watched again: the fd wakes the loop
        await until(lambda: drain.calls == [1, 3, 1], "the fd to be watched again")
    finally:
        readers.detach()


async def test_detach_while_held_leaves_nothing_behind(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    drain, readers = scripted(receiver, [0.3])
    loop = asyncio.get_running_loop()
    readers.attach(loop)
    sender.send(b"one")
    await until(lambda: drain.calls == [1], "the first datagram")
    assert readers.timed
    readers.detach()
    assert not readers.timed
    sender.send(b"unread")
    await asyncio.sleep(0.5)  # past the hold: neither the timer nor the fd may read it
    assert drain.calls == [1]
    # and the fd can be watched by someone else (nothing of ours registered)
    loop.add_reader(receiver.fileno(), lambda: None)
    loop.remove_reader(receiver.fileno())


async def test_the_switch_turns_moderation_off(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NO_MODERATION_ENV, "1")
    receiver, sender = pair
    drain = Drain(receiver)
    readers = ModeratedReaders([receiver.fileno()], drain)
    assert not readers.enabled
    readers.moderation = Scripted([0.05, 0.05])
    readers.attach(asyncio.get_running_loop())
    try:
        sender.send(b"one")
        await until(lambda: drain.calls == [1], "the first datagram")
        assert not readers.timed
        sender.send(b"two")
        await until(lambda: drain.calls == [1, 1], "the second datagram, from the fd")
    finally:
        readers.detach()
