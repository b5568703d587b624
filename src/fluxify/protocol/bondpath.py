"""One path of a bond, seen from one end: what we sent on it, what the peer says of it, what we
received on it. The bond engine (``protocol.bond``) owns these; nothing here reads a clock.

Sending side (facts from the peer's feedback): per-path sequence numbers and a ring of what was
sent under them (time, predicted queueing, inner packet: for acknowledgement, delay checks and
re-injection), the path's one-way delay (base and queueing, relative to the other paths: the
unknown clock offset is the same for every path of one peer), its delivery rate and loss, and
the *virtual queue*: the bytes we believe wait in the path's bottleneck, drained at ``rate``.

Receiving side (facts for our feedback and the reorder buffer): the highest per-path number and
the counts the peer asks about, and the one-way delay and jitter of what arrives here.
"""

from collections.abc import Hashable
from enum import IntEnum
from typing import Generic, TypeVar

LOG_SIZE = 8192  # datagrams remembered per path: > a round trip at 1 Gbit/s
LOG_MASK = LOG_SIZE - 1
PATH_SEQ_MODULUS = 1 << 24
PATH_SEQ_HALF = 1 << 23
US_MODULUS = 1 << 32
US_HALF = 1 << 31

INITIAL_RATE = 2_500_000.0  # bytes/s (20 Mbit/s) until feedback says better
MIN_RATE = 62_500.0  # 0.5 Mbit/s
MAX_RATE = 1_250_000_000.0  # 10 Gbit/s
RATE_GROWTH = 1.08  # per feedback in which the path queued less than we predicted
# A path that shows no queueing carries more than it delivers: its model stays above delivery x
# RATE_GROWTH, and x STARTUP_HEADROOM until it first queues or loses (TCP's slow start doubles
# per round trip for the same reason: nothing has shown it the link's capacity yet; x 2 here
# overshot a 50 Mbit/s link carrying 45 into loss, docs/bond-engine.md)
STARTUP_HEADROOM = 1.5
RATE_DECLINE = 0.92  # per feedback in which it queued more
QUEUE_ERROR_MARGIN_S = 0.002  # queueing predicted and measured agree within this
# A path that shows no queueing of its own (measured below the margin) while the model made a
# datagram wait this long was held back by the model, not by the link: its rate grows
UNDERUSED_WAIT_S = 0.0005
# a path measured queueing this much is the bottleneck: it delivers its capacity, and its model
# grows no further than that delivery
SATURATED_QUEUE_S = 0.005
BASE_WINDOW_S = 10.0  # base one-way delay: minimum over the last 10..20 s (two buckets)
DELAY_GAIN = 0.125  # EWMA gain of smoothed delays (RFC 6298)
JITTER_GAIN = 0.25
LOSS_GAIN = 0.1
LOSSY_WINDOW = 0.005  # a feedback window losing more: the bottleneck's buffer overflows
PEAK_DELAY_MEMORY_S = 2.0  # a one-way delay peak fades over about this long
RATE_WINDOW_S = 0.1  # delivery rate measured over at least this much receiver time
PEAK_MEMORY_S = 5.0  # the delivery peak fades over this long
PEAK_FLOOR = 0.95  # the rate model stays above 95 % of the recent delivery peak
DEFAULT_ACK_DELAY_S = 0.1  # until the first acknowledgement
DATAGRAM_OVERHEAD = 42  # bytes a bottleneck counts beyond the datagram: IPv4 + UDP + Ethernet


class Priority(IntEnum):
    """A path's role: ``backup`` paths carry data only while no primary is alive."""

    PRIMARY = 0
    BACKUP = 1


def unwrap(value: int, near: int, modulus: int) -> int:
    """The integer congruent to ``value`` modulo ``modulus`` nearest to ``near``."""
    half = modulus >> 1
    offset = (value - near) % modulus
    return near + offset if offset < half else near + offset - modulus


K = TypeVar("K", bound=Hashable)


class BondPath(Generic[K]):
    """State of one path. Zero state: alive, nothing sent, heard or known about it.

    ``key`` is the adapter's handle (an uplink index, a client address); ``path_id`` is the
    number we stamp on what we send on it. Not thread-safe: owned by one engine.
    """

    __slots__ = (
        "ack_delay_s",
        "acked",
        "acked_at",
        "alive",
        "base_bucket_at",
        "base_owd_s",
        "base_prev_s",
        "confirm_after",
        "confirmed",
        "correction_s",
        "delivery_peak",
        "delivery_rate",
        "died_at",
        "duplicated",
        "far",
        "fb_bytes",
        "fb_datagrams",
        "fb_receiver_us",
        "fb_seq",
        "flags",
        "has_owd",
        "key",
        "label",
        "last_data",
        "last_data_seq",
        "last_heard",
        "last_number",
        "last_stamp",
        "log_correction",
        "log_number",
        "log_packet",
        "log_qdelay",
        "log_time",
        "loss",
        "next_heartbeat",
        "owd_s",
        "path_id",
        "peer_path_id",
        "penalty_s",
        "priority",
        "queue_jitter_s",
        "queue_s",
        "rate",
        "reinjected",
        "rtt_s",
        "rx_bytes",
        "rx_count",
        "rx_fb_bytes",
        "rx_high",
        "rx_jitter_s",
        "rx_owd_peak_s",
        "rx_owd_s",
        "rx_owd_us",
        "rx_packets",
        "sched_owd_s",
        "seq",
        "snap_rx_bytes",
        "snap_tx_bytes",
        "starting",
        "suspect_at",
        "tx_bytes",
        "tx_packets",
        "urgent_at",
        "v1_delay_s",
        "vq",
        "vq_time",
        "window_loss",
        "wire_rate",
    )

    def __init__(self, key: K, label: str, path_id: int, now: float, priority: Priority) -> None:
        self.key = key
        self.label = label
        self.path_id = path_id
        self.priority = priority
        self.alive = True
        self.last_heard = now  # a new path gets a full liveness interval
        self.died_at = float("-inf")
        self.next_heartbeat = now
        self.urgent_at = float("-inf")
        self.suspect_at = float("-inf")  # when it was asked to answer (loaded, unacknowledged)
        self.tx_packets = self.tx_bytes = self.rx_packets = self.rx_bytes = 0
        self.reinjected = self.duplicated = 0
        self.snap_tx_bytes = self.snap_rx_bytes = 0  # at the last snapshot (rates, shares)
        # set by the engine from the negotiated features and the priority
        self.flags = 0
        self.penalty_s = 0.0
        self.far = False  # far slower one way than the fastest primary: failover only
        self.confirmed = True  # False: learnt from a v1 control packet that may be a replay
        self.last_stamp = -(1 << 63)  # v1 server: the newest heartbeat stamp on this path
        self.confirm_after = -(1 << 63)  # v1 server: a heartbeat newer than this confirms it
        self.sched_owd_s = 0.0  # one-way delay above the lowest path's
        # sending: per-path numbers, the ring of what they carried, acknowledgements
        self.seq = 0  # extended number of the last datagram sent on this path
        self.acked = 0  # extended highest number the peer reported
        self.last_data_seq = 0  # number of the last IP packet sent on it
        self.acked_at = now
        self.ack_delay_s = DEFAULT_ACK_DELAY_S
        self.log_time = [0.0] * LOG_SIZE
        self.log_qdelay = [0.0] * LOG_SIZE
        self.log_number = [0] * LOG_SIZE  # session number of an IP packet, 0 for control
        self.log_packet: list[bytes | None] = [None] * LOG_SIZE
        self.log_correction = [0.0] * LOG_SIZE  # correction_s when it was sent
        self.correction_s = 0.0  # all corrections of the virtual queue so far, in seconds
        # sending: what the peer's feedback taught us
        self.rate = INITIAL_RATE
        self.starting = True  # start-up: never seen queueing or losing (``_correct``)
        self.delivery_rate = 0.0
        self.delivery_peak = 0.0  # highest delivery rate lately, fading
        self.wire_rate = (
            0.0  # delivery rate with each datagram's DATAGRAM_OVERHEAD: the model's units
        )
        self.vq = 0.0
        self.vq_time = now
        self.has_owd = False
        self.owd_s = 0.0  # last one-way delay the peer measured (clock offset included)
        self.base_owd_s = 0.0  # its minimum over the base window
        self.base_prev_s = 0.0
        self.base_bucket_at = now
        self.queue_s = 0.0  # owd_s - base_owd_s: queueing in the path's bottleneck
        self.queue_jitter_s = 0.0  # how much queue_s moves between reports
        self.loss = 0.0
        self.window_loss = 0.0  # loss in the last feedback window
        self.fb_seq = 0
        self.fb_datagrams = 0
        self.fb_bytes = 0
        self.fb_receiver_us = -1
        self.rtt_s: float | None = None  # heartbeat round trip (client)
        self.v1_delay_s: float | None = None  # v1 server: heartbeat age, clock offset included
        # receiving: what arrives here from the peer's path ``peer_path_id``
        self.peer_path_id = -1
        self.rx_high = 0
        self.rx_count = 0
        self.rx_fb_bytes = 0
        self.rx_owd_us = 0
        self.rx_owd_s = 0.0  # smoothed one-way delay of arrivals (clock offset included)
        self.rx_jitter_s = 0.0
        self.rx_owd_peak_s = 0.0  # recent highest one-way delay, decaying slowly
        self.last_number = -1  # extended session number last delivered on this path
        self.last_data = float("-inf")

    # -- sending -----------------------------------------------------------------------------

    def queue_delay(self, now: float) -> float:
        """Drain the virtual queue to ``now`` and return how long a new datagram would wait."""
        queued = self.vq - self.rate * (now - self.vq_time)
        queued = max(queued, 0.0)
        self.vq = queued
        self.vq_time = now
        return queued / self.rate

    def record(self, now: float, qdelay: float, number: int, packet: bytes | None) -> int:
        """Log one datagram about to be sent; returns its per-path number."""
        seq = self.seq + 1
        self.seq = seq
        slot = seq & LOG_MASK
        self.log_time[slot] = now
        self.log_qdelay[slot] = qdelay
        self.log_number[slot] = number
        self.log_packet[slot] = packet
        self.log_correction[slot] = self.correction_s
        if number:
            self.last_data_seq = seq
        return seq

    def unacked_since(self) -> float | None:
        """Send time of the oldest IP packet the peer has not acknowledged, or None.

        Control datagrams do not count: a peer owes feedback only for data, so an echo or a
        feedback packet of ours may well stay unacknowledged on a path carrying no data."""
        if self.last_data_seq <= self.acked:
            return None
        log_number = self.log_number
        seq = max(self.acked + 1, self.seq - LOG_SIZE + 1)
        while not log_number[seq & LOG_MASK] and seq < self.last_data_seq:
            seq += 1
        return self.log_time[seq & LOG_MASK]

    def unacked_packets(self) -> list[tuple[int, bytes]]:
        """``(session number, packet)`` of the IP packets sent but not acknowledged."""
        out = []
        for seq in range(max(self.acked + 1, self.seq - LOG_SIZE + 1), self.seq + 1):
            slot = seq & LOG_MASK
            packet = self.log_packet[slot]
            if packet is not None:
                out.append((self.log_number[slot], packet))
                self.log_packet[slot] = None  # re-injected once
        return out

    def on_feedback(  # noqa: PLR0917 - one feedback entry, field by field
        self,
        wire_seq: int,
        owd_s: float,
        datagrams: int,
        received: int,
        receiver_us: int,
        now: float,
    ) -> bool:
        """One feedback entry about this path; True when it acknowledged something new.

        Updates the acknowledgement, ack delay, base delay and queueing, delivery rate and loss,
        then moves the rate model towards what the path did."""
        highest = unwrap(wire_seq, self.seq, PATH_SEQ_MODULUS)
        if highest <= self.acked or highest > self.seq:
            return False
        fresh = self.seq - highest < LOG_SIZE
        slot = highest & LOG_MASK
        self.acked = highest
        self.acked_at = now
        self._on_counts(datagrams, received, receiver_us)
        if not fresh:
            return True
        self.ack_delay_s += DELAY_GAIN * (now - self.log_time[slot] - self.ack_delay_s)
        if not self.has_owd:
            self.has_owd = True
            self.base_owd_s = self.base_prev_s = owd_s
            self.base_bucket_at = now
        elif now - self.base_bucket_at > BASE_WINDOW_S:
            self.base_prev_s = self.base_owd_s
            self.base_owd_s = owd_s
            self.base_bucket_at = now
        elif owd_s < self.base_owd_s:
            self.base_owd_s = owd_s
        self.owd_s = owd_s
        predicted = self.log_qdelay[slot]
        measured = owd_s - self.base_delay
        self.queue_jitter_s += JITTER_GAIN * (abs(measured - self.queue_s) - self.queue_jitter_s)
        self.queue_s = measured
        # The prediction logged for this datagram did not know the corrections made since it
        # was sent; without subtracting them every late report would correct again.
        self._correct(
            measured - predicted - (self.correction_s - self.log_correction[slot]), measured
        )
        return True

    @property
    def base_delay(self) -> float:
        """The base one-way delay: the minimum over the last 10..20 s."""
        return min(self.base_owd_s, self.base_prev_s)

    def _correct(self, error_s: float, measured_s: float) -> None:
        """Queueing measured minus predicted: move the rate model and its queue towards it.

        The rate grows when the path drained faster than modelled by more than the noise, and
        also when it shows no queueing at all while the model had made datagrams wait: without
        that the model of a fast link stays wherever the scheduler began spilling to the next
        path (within ``SWITCH_MARGIN_S`` of queue), and two unshaped links would share a load
        that one carries alone. That rule stops at the path's delivery x RATE_GROWTH (x
        STARTUP_HEADROOM in its start-up), which a path showing no queueing is raised to at
        once: it carries more than it delivers, and nothing else says how much more. Less
        queueing than predicted while the path loses datagrams means the bottleneck dropped
        what the model thought queued (its buffer is full): the queue is corrected, the rate is
        not raised."""
        if measured_s > QUEUE_ERROR_MARGIN_S or self.window_loss >= LOSSY_WINDOW:
            self.starting = False  # it queued or lost: near its capacity, start-up is over
        margin = QUEUE_ERROR_MARGIN_S + 2.0 * self.queue_jitter_s
        if error_s > margin:  # the path holds more than we think: it is slower than modelled,
            # though not slower than it recently delivered (a queue that is not the link's own,
            # a receiver busy elsewhere, must not talk its rate down)
            floor = max(MIN_RATE, PEAK_FLOOR * self.delivery_peak)
            self.rate = max(floor, min(self.rate, self.rate * RATE_DECLINE))
            self._shift_queue(error_s)
        elif error_s < -margin or (measured_s < UNDERUSED_WAIT_S and error_s < -UNDERUSED_WAIT_S):
            # it drained faster than modelled, or dropped
            if self.window_loss < LOSSY_WINDOW:
                grown = min(MAX_RATE, self.rate * RATE_GROWTH)
                if measured_s > SATURATED_QUEUE_S:  # queueing: what it delivers is its capacity
                    grown = min(grown, max(self.rate, self.wire_rate))
                elif measured_s < UNDERUSED_WAIT_S:  # not queueing: it can carry more than
                    headroom = STARTUP_HEADROOM if self.starting else RATE_GROWTH  # it delivers
                    target = min(MAX_RATE, headroom * self.wire_rate)
                    if error_s >= -margin:  # only the model made it wait: up to the target
                        grown = min(grown, max(self.rate, target))
                    grown = max(grown, target)
                self.rate = grown
            self._shift_queue(error_s)

    def _shift_queue(self, error_s: float) -> None:
        """Move the virtual queue by ``error_s`` of waiting and remember the correction."""
        before = self.vq
        self.vq = max(0.0, before + error_s * self.rate)
        self.correction_s += (self.vq - before) / self.rate

    def _on_counts(self, datagrams: int, received: int, receiver_us: int) -> None:
        """Cumulative counts from feedback: delivery rate and loss over >= RATE_WINDOW_S."""
        if self.fb_receiver_us < 0:
            self.fb_receiver_us, self.fb_datagrams, self.fb_bytes = receiver_us, datagrams, received
            self.fb_seq = self.acked
            return
        elapsed = ((receiver_us - self.fb_receiver_us) % US_MODULUS) / 1e6
        if elapsed < RATE_WINDOW_S:
            return
        got_bytes = (received - self.fb_bytes) % US_MODULUS
        got = (datagrams - self.fb_datagrams) % US_MODULUS
        sent = self.acked - self.fb_seq
        delivered = self.delivery_rate = got_bytes / elapsed
        self.wire_rate = (got_bytes + got * DATAGRAM_OVERHEAD) / elapsed
        if sent > 0:
            sample = max(0.0, min(1.0, 1.0 - got / sent))
            self.window_loss = sample
            self.loss += LOSS_GAIN * (sample - self.loss)
        peak = self.delivery_peak * max(0.0, 1.0 - elapsed / PEAK_MEMORY_S)
        if self.window_loss >= LOSSY_WINDOW and self.queue_s > QUEUE_ERROR_MARGIN_S:
            peak = delivered  # losing from a full queue: it cannot carry its old peak now
        self.delivery_peak = max(peak, delivered)
        self.fb_receiver_us, self.fb_datagrams, self.fb_bytes = receiver_us, datagrams, received
        self.fb_seq = self.acked

    # -- receiving ---------------------------------------------------------------------------

    def on_arrival(self, wire_seq: int, owd_us: int, owd_s: float, size: int) -> None:
        """A v2 datagram numbered ``wire_seq`` by the peer arrived here after ``owd_s``."""
        if self.rx_count == 0:
            self.rx_high = wire_seq
            self.rx_owd_us = owd_us
            self.rx_owd_s = self.rx_owd_peak_s = owd_s
        else:
            number = unwrap(wire_seq, self.rx_high, PATH_SEQ_MODULUS)
            if number > self.rx_high:
                self.rx_high = number
                self.rx_owd_us = owd_us
            deviation = owd_s - self.rx_owd_s
            self.rx_owd_s += DELAY_GAIN * deviation
            self.rx_jitter_s += JITTER_GAIN * (abs(deviation) - self.rx_jitter_s)
            if owd_s > self.rx_owd_peak_s:  # noqa: PLR1730 - max() is a call per packet
                self.rx_owd_peak_s = owd_s  # fades in decay_peak()
        self.rx_count += 1
        self.rx_fb_bytes += size

    def decay_peak(self, elapsed_s: float) -> None:
        """Let the one-way delay peak fade towards the smoothed delay (time constant 2 s)."""
        fade = min(1.0, elapsed_s / PEAK_DELAY_MEMORY_S)
        self.rx_owd_peak_s -= fade * (self.rx_owd_peak_s - self.rx_owd_s)

    def revive(self, now: float) -> None:
        """Alive again: what we knew of its queue and rate is void."""
        self.alive = True
        self.last_heard = now
        self.vq = 0.0
        self.vq_time = now
        self.acked = self.seq  # what it lost while dead is not waited for
        self.acked_at = now
        self.ack_delay_s = DEFAULT_ACK_DELAY_S
        self.fb_receiver_us = -1  # the rate model is kept: it is most likely the same link
        self.rtt_s = None
