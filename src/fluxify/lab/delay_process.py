"""The delay emulator's data path: one process per direction holds packets from a TUN device.

``python -m fluxify.lab.delay_process --tun NAME --delay-ms D [--jitter-ms J]`` creates the TUN
``NAME`` in the current namespace, prints ``ready NAME`` on stdout, then reads every packet routed
into the device, holds it for D ms (± J ms, uniform) and writes it back into the same device, from
where the kernel routes it on. On SIGTERM or SIGINT it prints one JSON line of counters and exits.

Why one TUN read back into itself: a packet written into a TUN arrives with ``iif`` = that TUN,
so policy routing (see ``lab.delay``) sends it onwards by the main table instead of into the TUN
again. netem is not in this kernel; this is its ``delay D J`` without reordering.
"""

import argparse
import contextlib
import ctypes
import json
import os
import random
import select
import signal
import sys
import time
from collections import deque
from types import FrameType

from fluxify.linux.tun import Tun

# Large enough for any packet a 1500-byte (or 64 KiB) MTU device hands us.
READ_SIZE_BYTES = 65535
# Packets read per wake-up before due packets get their turn: bounds release lateness at
# ~1-2 us per read (python-datapath.md: os.read on TUN ~0.9 us).
READ_BUDGET = 64
# Idle wake-up when nothing is queued, so a stop request is seen within this time.
IDLE_WAIT_S = 0.5
DEFAULT_LIMIT_PACKETS = 20_000  # ~30 MB of 1500-byte packets; netem's default limit is 1000
LATE_THRESHOLD_S = 0.001
# Waking from select takes ~50 us past the timeout even with a 1 us timer slack (measured on
# the 2-core CI machine type: median 52 us, default 50 us slack: 104 us), so packets due within
# this margin leave now: the median release error is then ~0 instead of +50..100 us.
WAKE_MARGIN_S = 50e-6
PR_SET_TIMERSLACK = 29
TIMER_SLACK_NS = 1000


class DelayLine:
    """When each packet leaves: ``admit(now)`` gives a deadline, never earlier than the last one.

    A packet admitted at ``now`` is due at ``now + delay ± jitter`` (uniform), but not before the
    previous packet's deadline: jitter never reorders, and the added delay always stays within
    ``[max(0, delay - jitter), delay + jitter]`` because the previous deadline is at most
    ``earlier_now + delay + jitter``. Pure: time comes in as ``now`` (seconds, any clock).
    The zero state has no previous packet. Not safe to share between threads.
    """

    def __init__(self, delay_s: float, jitter_s: float = 0.0, seed: int | None = None) -> None:
        if delay_s < 0 or jitter_s < 0:
            raise ValueError(f"delay and jitter must be >= 0, not {delay_s} and {jitter_s}")
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self._random = random.Random(seed)
        self._last_deadline = float("-inf")

    def admit(self, now: float) -> float:
        """The deadline of a packet that arrived at ``now``."""
        deadline = now + self.delay_s
        if self.jitter_s:
            deadline += self._random.uniform(-self.jitter_s, self.jitter_s)
            deadline = max(deadline, now)
        deadline = max(deadline, self._last_deadline)
        self._last_deadline = deadline
        return deadline


class Counters:
    """What the data path did; printed as JSON when the process stops."""

    def __init__(self) -> None:
        self.forwarded = 0
        self.dropped_full = 0  # the hold queue was at its limit
        self.write_errors = 0
        self.max_queued = 0
        self.late_over_1ms = 0  # released more than 1 ms after the deadline
        self.max_late_s = 0.0

    def as_dict(self) -> dict[str, float]:
        times = os.times()
        return {
            "forwarded": self.forwarded,
            "dropped_full": self.dropped_full,
            "write_errors": self.write_errors,
            "max_queued": self.max_queued,
            "late_over_1ms": self.late_over_1ms,
            "max_late_ms": round(self.max_late_s * 1000, 3),
            "cpu_s": round(times.user + times.system, 3),
        }


class _StopRequestedError(Exception):
    """Raised from the signal handler to leave the blocking select at once."""


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _StopRequestedError


def _release_due(fd: int, queue: "deque[tuple[float, bytes]]", counters: Counters) -> None:
    now = time.monotonic()
    write, horizon = os.write, now + WAKE_MARGIN_S
    while queue and queue[0][0] <= horizon:
        deadline, packet = queue.popleft()
        late = now - deadline
        if late > LATE_THRESHOLD_S:
            counters.late_over_1ms += 1
            counters.max_late_s = max(counters.max_late_s, late)
        try:
            write(fd, packet)
            counters.forwarded += 1
        except OSError:
            counters.write_errors += 1  # e.g. no route onwards: the kernel refuses it


def _admit_ready(
    fd: int, queue: "deque[tuple[float, bytes]]", line: DelayLine, limit: int, counters: Counters
) -> None:
    read, clock, admit = os.read, time.monotonic, line.admit
    for _ in range(READ_BUDGET):
        try:
            packet = read(fd, READ_SIZE_BYTES)
        except BlockingIOError:
            break
        if len(queue) >= limit:
            counters.dropped_full += 1
            continue
        queue.append((admit(clock()), packet))
    counters.max_queued = max(counters.max_queued, len(queue))


def forward(fd: int, line: DelayLine, limit: int, counters: Counters) -> None:
    """Hold and release packets on ``fd`` until ``_StopRequestedError`` is raised (by a signal)."""
    queue: deque[tuple[float, bytes]] = deque()
    watched = [fd]
    while True:  # ends by _StopRequestedError from the signal handler
        _release_due(fd, queue, counters)
        wait = queue[0][0] - time.monotonic() - WAKE_MARGIN_S if queue else IDLE_WAIT_S
        # select: microsecond timeout (epoll and poll round to whole milliseconds).
        ready, _, _ = select.select(watched, [], [], max(wait, 0.0))
        if ready:
            _admit_ready(fd, queue, line, limit, counters)


def _tighten_timer_slack() -> None:
    """Ask for 1 us timer slack (default 50 us): select then wakes closer to the deadline."""
    with contextlib.suppress(OSError, AttributeError):  # best effort: only accuracy suffers
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)


def _run_realtime(priority: int) -> None:
    """SCHED_FIFO: a busy iperf3 or probe sender on the same core no longer delays releases.

    Safe because the loop blocks in select between releases; the kernel's RT throttling
    (95 % of each second) bounds it anyway.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        print(f"delay emulator: staying on normal scheduling ({exc.strerror})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tun", required=True, help="TUN device to create and serve")
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT_PACKETS, help="packets held")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--rt-priority", type=int, default=0, help="SCHED_FIFO priority (0: normal scheduling)"
    )
    args = parser.parse_args(argv)
    line = DelayLine(args.delay_ms / 1000, args.jitter_ms / 1000, args.seed)
    counters = Counters()
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    _tighten_timer_slack()
    if args.rt_priority:
        _run_realtime(args.rt_priority)
    try:
        with Tun.open(args.tun) as tun:
            print(f"ready {tun.name}", flush=True)
            forward(tun.fd, line, args.limit, counters)
    except _StopRequestedError:
        pass
    print(json.dumps(counters.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
