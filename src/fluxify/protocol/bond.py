"""The bond engine: one sans-IO multipath core, the same at the client and at the server.

Per session it owns the numbering and sealing (``DataSession``), the per-path estimates
(``BondPath``), the scheduler, the reorder buffer, liveness, re-injection, duplication of
critical packets and the feedback it owes the peer. It reads no clock and touches no socket
(aioquic's ``QuicConnection`` is the model):

- ``send(packets, now)`` takes IP packets read from the TUN and returns, per path, the run of
  datagrams to send on it (one GSO call each, later);
- ``receive(key, datagrams, now)`` takes what arrived on one path and returns the IP packets
  ready for the TUN, in order, duplicates and replays gone;
- ``outgoing()`` hands out what the engine itself wants sent (echoes, feedback, heartbeats,
  re-injections), ``next_timer()`` / ``on_timer(now)`` run its deadlines, ``snapshot(now)``
  reports plain numbers, ``take_events()`` the path changes worth a log line.

With ``bond-v2`` negotiated (SPEC §5, docs/bond-engine.md) every datagram carries its path's own
sequence number and send time; the receiver reports what arrived per path (feedback packets),
so each sender knows, per path and direction, one-way delay and queueing, delivery rate and
loss. Scheduling is *earliest arrival*: a packet goes where it is expected to arrive first, base
one-way delay + virtual queue ÷ rate (MPTCP's ECF is the nearest published idea); a path whose
queue would exceed ``MAX_QUEUE_DELAY_S`` counts as full, so the tunnel never builds a standing
queue of its own; backup paths carry data only when no primary is alive. The rate of
each path's model follows its measured queueing: more than predicted, slower; less, faster.
Without v2 (a Go peer) the engine speaks v1 byte for byte: heartbeats, round-robin uplink,
lowest-delay downlink, and a reorder hold from the heartbeats' delay spread.
"""

from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Generic

from fluxify.protocol.bondpath import (
    DATAGRAM_OVERHEAD,
    PATH_SEQ_MODULUS,
    US_HALF,
    US_MODULUS,
    BondPath,
    K,
    Priority,
    unwrap,
)
from fluxify.protocol.critical import is_critical
from fluxify.protocol.drops import DropReason
from fluxify.protocol.feedback import FeedbackEntry, pack_feedback, unpack_feedback
from fluxify.protocol.header import PATH_SEQ_MASK, HeaderFlag, PacketType
from fluxify.protocol.heartbeat import (
    PATH_STALE_AFTER_S,
    V1_HEARTBEAT_INTERVAL_S,
    pack_heartbeat,
    unpack_heartbeat,
)
from fluxify.protocol.reorder import ReorderBuffer
from fluxify.protocol.session import DataSession

# Scheduling
MAX_QUEUE_DELAY_S = 0.025  # a path queueing more is full: others first, so no standing queue
FULL_PENALTY_S = 100.0  # a full path is chosen only when every path is full
# The path in use keeps the packets unless another is this much sooner. One TUN read of a
# CPU-bound sender is a few 64 KiB super-packets, ~1 ms of queue at 1 Gbit/s in the model: at a
# 1 ms margin two unshaped links took turns every few batches, and every turn costs the receiver
# a reordered run (bonded / one uplink up 0.89-0.95x in three runs; at 5 ms 0.97-0.98x)
SWITCH_MARGIN_S = 0.005
# A backup is chosen only when no primary is alive. Not when the primaries are merely full: one
# download keeps them full for as long as it lasts, and would spend a metered link's data.
BACKUP_PENALTY_S = 1000.0
FAR_SKEW_S = 0.060  # a primary this much slower one way than the fastest is kept for failover
FAR_HYSTERESIS_S = 0.010  # ... until it is within 50 ms again
FAR_EVENT = "far slower one way than the fastest: kept for failover"
NEAR_EVENT = "near the fastest again: carries data"
# Liveness (bond-v2)
TICK_S = 0.02  # feedback, liveness and hold refresh cadence while data flows
ACTIVE_AFTER_DATA_S = 0.5  # the tick runs this long after the last data
DEAD_ACK_FACTOR = 2.5  # a loaded path is dead when unacknowledged this many ack delays ...
LOADED_DEAD_MIN_S = 0.1  # ... but never sooner than this
LOADED_DEAD_MAX_S = 0.15  # ... and never later; then it must answer a heartbeat within
SUSPECT_ANSWER_FACTOR = 1.5  # 1.5 round trips,
SUSPECT_MIN_WAIT_S = 0.03  # bounded: detection stays within 300 ms of silence
SUSPECT_MAX_WAIT_S = 0.12
PRIMARY_HEARTBEAT_S = 1.0  # idle cadence of a live primary path (heartbeat + echo)
BACKUP_HEARTBEAT_S = 25.0  # of a live backup: ~0.7 MB a day with the echoes
DEAD_PRIMARY_HEARTBEAT_S = 0.25  # how often a dead path is asked whether it is back
DEAD_BACKUP_HEARTBEAT_S = 2.0
IDLE_DEAD_HEARTBEATS = 3.5  # silent for this many heartbeat intervals: dead
PATH_FORGET_S = 30.0  # server: a path silent this long (or 4 heartbeats) is forgotten
MAX_PATHS = 16
EVICTABLE_AFTER_S = 10.0  # a full session makes room only with a path silent this long
UNKNOWN_SOURCE_PER_S = 20.0  # decryption attempts per second for addresses that are no path
UNKNOWN_SOURCE_BURST = 40.0
V1_STAMP_WINDOW_NS = 30_000_000_000  # a v1 heartbeat stamped further from now is refused
FIRST_SEQ = 1
MAX_REINJECTION_QUEUE = 8192  # packets waiting to be re-sent after a path died
REINJECT_WINDOW = 16_000  # re-send no packet this far behind the newest: the replay window
# Reordering
# A held packet waits for the gap before it: skew x 1.5 + 5 ms, the skew being how much later
# than it the slowest active path's datagrams have recently arrived. Generous on purpose: a gap
# that was really lost is released as soon as every path passed it (the horizon), so the
# deadline only matters when a path goes quiet; releasing too early makes TCP retransmit and
# halve its window for a packet that was only late.
HOLD_MARGIN_S = 0.005
HOLD_SKEW_FACTOR = 1.5
JITTER_ALLOWANCE = 2.0  # a path's latest arrival: its recent peak one-way delay + 2 x jitter
MAX_HOLD_S = 0.5
ACTIVE_LANE_S = 2.0  # a path that delivered data this recently may still deliver a gap
STARTUP_HOLD_S = 0.1  # hold ceiling while the peer's paths may not all have spoken yet
V1_CLIENT_HOLD_S = 0.003  # a v1 server sends on one path: only its path switches reorder
V1_SPREAD_FACTOR = 1.5
V1_HOLD_MARGIN_S = 0.015
V1_MIN_HOLD_S = 0.020
V1_MAX_HOLD_S = 0.200
HOUSEKEEPING_S = 1.0
V1_CLIENT_DEAD_AFTER_S = 4 * V1_HEARTBEAT_INTERVAL_S

_IP = int(PacketType.IP)
_HEARTBEAT = int(PacketType.HEARTBEAT)
_FEEDBACK = int(PacketType.FEEDBACK)
_FIELDS = int(HeaderFlag.PATH_FIELDS)
_BACKUP = int(HeaderFlag.BACKUP)
_ECHO = int(HeaderFlag.ECHO)
_DUPLICATED = int(HeaderFlag.DUPLICATED)
_INF = float("inf")
_NEVER = float("-inf")


class Role(IntEnum):
    CLIENT = 0  # owns its paths (uplinks), heartbeats them
    SERVER = 1  # learns paths from authenticated source addresses


@dataclass(frozen=True)
class BondConfig:
    """What the engine is: its role, whether ``bond-v2`` was negotiated, and the offset of the
    wall clock to its ``now`` (v1 heartbeats carry wall-clock nanoseconds)."""

    role: Role
    v2: bool
    wall_offset_ns: int = 0


@dataclass(frozen=True)
class PathReport:
    label: str
    alive: bool
    priority: str
    rtt_ms: float | None
    owd_ms: float | None  # one-way delay above the lowest path's (feedback, ours to the peer)
    queue_ms: float | None
    jitter_ms: float
    rate_mbit: float  # the scheduler's model of the path's rate
    delivery_mbit: float  # what the peer reported receiving
    loss: float
    share: float  # of the bytes we sent since the previous snapshot
    tx_mbit: float  # what we sent on it since the previous snapshot, per second
    rx_mbit: float  # what we received on it since the previous snapshot, per second
    rx_share: float  # of the bytes we received since the previous snapshot
    idle_s: float
    tx_packets: int
    tx_bytes: int
    rx_packets: int
    rx_bytes: int
    reinjected: int
    duplicated: int


@dataclass(frozen=True)
class ReorderReport:
    held: int
    reordered: int
    released_late: int
    lost: int
    known_lost: int  # of lost: released because every path had passed the gap
    expired: int  # of lost: released at a held packet's deadline
    hold_ms: float


@dataclass(frozen=True)
class BondSnapshot:
    paths: tuple[PathReport, ...]
    reorder: ReorderReport
    efficiency: float | None  # delivered / modelled capacity of the live paths, while loaded


class BondEngine(Generic[K]):
    """The multipath state of one session at one end. Not thread-safe: one event loop."""

    def __init__(self, codec: DataSession, config: BondConfig, now: float) -> None:
        self.codec = codec
        self.config = config
        self.v2 = config.v2
        self.paths: list[BondPath[K]] = []
        self._by_key: dict[K, BondPath[K]] = {}
        self._by_id: dict[int, BondPath[K]] = {}
        self._usable: list[BondPath[K]] = []
        self._duplicable = 0  # live primaries: duplicate critical packets when >= 2
        self.reorder = ReorderBuffer(first=FIRST_SEQ)  # a session numbers its IP packets from 1
        self._out: dict[K, list[bytes]] = {}
        self._events: list[tuple[str, str]] = []
        self._reinjection: deque[tuple[int, bytes]] = deque()
        self._unknown_tokens = UNKNOWN_SOURCE_BURST
        self._unknown_at = now
        self._newest_stamp = -(1 << 63)  # v1 server: newest heartbeat stamp accepted
        self.reinjection_dropped = 0  # too old to be accepted by the peer any more
        self._rr = 0
        self._current: BondPath[K] | None = None  # the path the last IP packet went on (v2)
        self._rx_ref_us: int | None = None
        self._fb_ref_us: int | None = None
        self._hold_ceiling_s = 0.0
        self._v1_hold_s = V1_CLIENT_HOLD_S if config.role is Role.CLIENT else V1_MIN_HOLD_S
        self._v1_best: BondPath[K] | None = None
        self._feedback_due = False
        self._active_until = float("-inf")
        self._tick_at = _INF
        self._heartbeat_at = now if config.role is Role.CLIENT else _INF
        self._housekeeping_at = now + HOUSEKEEPING_S
        self.last_heard = now
        self.feedback_heard = float("-inf")
        self._started = now
        self._hold_refreshed = now
        self._snap_at = now

    # -- paths -------------------------------------------------------------------------------

    def add_path(
        self,
        key: K,
        label: str,
        now: float,
        priority: Priority = Priority.PRIMARY,
        *,
        confirmed: bool = True,
    ) -> BondPath[K]:
        """A path we own (client uplink) or learnt (server: a client address)."""
        used = self._by_id.keys()
        path_id = next(i for i in range(MAX_PATHS + 1) if i not in used)
        path = BondPath(key, label, path_id, now, priority)
        path.confirmed = confirmed
        self.paths.append(path)
        self._by_key[key] = path
        self._by_id[path_id] = path
        self._refresh()
        return path

    def remove_path(self, key: K) -> None:
        path = self._by_key.pop(key, None)
        if path is None:
            return
        self.paths.remove(path)
        del self._by_id[path.path_id]
        self._refresh()

    def path(self, key: K) -> BondPath[K] | None:
        return self._by_key.get(key)

    def set_priority(self, key: K, priority: Priority) -> None:
        path = self._by_key.get(key)
        if path is not None and path.priority != priority:
            path.priority = priority
            self._refresh()

    @property
    def all_dead(self) -> bool:
        return not self._usable

    def take_events(self) -> list[tuple[str, str]]:
        """``(what, path label)`` since the last call: "down", "up", "new", "forgotten",
        ``FAR_EVENT``, ``NEAR_EVENT``."""
        events, self._events = self._events, []
        return events

    def outgoing(self) -> dict[K, list[bytes]]:
        """The datagrams queued since the last call, per path key, in sending order."""
        out = self._out
        if out:
            self._out = {}
        return out

    # -- sending -----------------------------------------------------------------------------

    def send(self, packets: list[bytes], now: float) -> dict[K, list[bytes]]:
        """Seal ``packets`` (read from the TUN) and return every queued datagram, per path."""
        usable = self._usable
        if not usable:
            self.codec.drops.counts[DropReason.NO_PATH] += len(packets)
            return self.outgoing()
        if self.v2:
            if self._reinjection:
                self._drain_reinjection(now)
            self._send_v2(packets, now)
        else:
            self._send_v1(packets)
        if self.v2:
            self._active_until = now + ACTIVE_AFTER_DATA_S
            if self._tick_at == _INF:
                self._tick_at = now + TICK_S
        return self.outgoing()

    def _send_v2(self, packets: list[bytes], now: float) -> None:
        """Earliest arrival, in runs, chosen once per call: the path of earliest arrival for the
        first packet (the one in use unless another is ``SWITCH_MARGIN_S`` sooner) takes the
        whole batch unless its queue would exceed ``MAX_QUEUE_DELAY_S``; then the rest spills
        to the next. Packet-by-packet choice between two equal paths alternates them, and every
        other packet then waits in the receiver's reorder buffer for its sibling (each path's
        datagrams arrive in batches of their own); a batch split between two paths that have
        room leaves in two half-size sends and arrives in two half-size reads, which over two
        unshaped links made the bond slower than one of them. Within one call a path left is
        not taken again unless the one in use is full: each path's datagrams of a call go out
        in one send, so a second run on it would overtake the run in between on the wire. Each
        path's queue is drained to ``now`` once per call and grown by the bytes put on it."""
        codec = self.codec
        seal = codec.seal_ip
        out = self._out
        usable = self._usable
        send_us = int(now * 1e6) & 0xFFFF_FFFF
        duplicate = self._duplicable >= 2
        for path in usable:
            path.queue_delay(now)
        best = self._current
        if best is None or best not in usable:
            best = usable[0]
        wait = best.vq / best.rate
        left: list[BondPath[K]] = []  # paths this call put packets on and then left
        # the earliest arrival on any other path: unchanged while packets stay on ``best``
        rival = self._rival_arrival(best, left)
        base = best.sched_owd_s + best.penalty_s
        run = out.get(best.key)
        placed = False  # whether this call has put a packet on ``best`` yet
        for packet in packets:
            arrival = base + wait
            full = wait > MAX_QUEUE_DELAY_S
            if full:
                arrival += FULL_PENALTY_S
                if left:  # full: a path left before may take the packets again
                    left.clear()
                    rival = self._rival_arrival(best, left)
            if (full or not placed) and arrival > rival + SWITCH_MARGIN_S:
                chosen = self._earliest(best, left)
                if chosen is not best:
                    left.append(best)
                    best = chosen
                    wait = best.vq / best.rate
                    base = best.sched_owd_s + best.penalty_s
                    run = out.get(best.key)
                rival = self._rival_arrival(best, left)
            seq = best.seq + 1
            critical = duplicate and is_critical(packet)
            flags = best.flags | _DUPLICATED if critical else best.flags
            datagram = seal(packet, flags, (best.path_id << 24) | (seq & PATH_SEQ_MASK), send_us)
            if datagram is None:
                continue
            number = codec.last_seq
            best.record(now, wait, number, packet)
            size = len(datagram) + DATAGRAM_OVERHEAD
            best.vq += size
            wait += size / best.rate
            best.tx_packets += 1
            best.tx_bytes += size - DATAGRAM_OVERHEAD
            placed = True
            if run is None:
                run = out[best.key] = [datagram]
            else:
                run.append(datagram)
            if critical:
                self._duplicate(best, number, packet, now, send_us)
                rival = self._rival_arrival(best, left)  # the copy queued on another path
        self._current = best

    def _arrival(self, path: BondPath[K]) -> float:
        """When a datagram put on ``path`` now would arrive, relative to the fastest path; its
        queue already drained to now."""
        wait = path.vq / path.rate
        arrival = path.sched_owd_s + wait + path.penalty_s
        return arrival + FULL_PENALTY_S if wait > MAX_QUEUE_DELAY_S else arrival

    def _rival_arrival(self, chosen: BondPath[K], left: list[BondPath[K]]) -> float:
        """The earliest arrival on a usable path other than ``chosen`` and those ``left``."""
        return min(
            (self._arrival(p) for p in self._usable if p is not chosen and p not in left),
            default=_INF,
        )

    def _earliest(self, current: BondPath[K], left: list[BondPath[K]]) -> BondPath[K]:
        """The usable path of earliest arrival but those ``left`` (``current`` on a tie)."""
        best, best_arrival = current, self._arrival(current)
        for path in self._usable:
            if path in left:
                continue
            arrival = self._arrival(path)
            if arrival < best_arrival:
                best, best_arrival = path, arrival
        return best

    def _duplicate(
        self, first: BondPath[K], number: int, packet: bytes, now: float, send_us: int
    ) -> None:
        """A second copy of a critical packet on the next-best live primary."""
        others = [p for p in self._usable if p is not first and p.priority is Priority.PRIMARY]
        if not others:
            return
        second = min(others, key=lambda p: p.sched_owd_s + p.queue_delay(now))
        self._resend(second, number, packet, now, send_us, _DUPLICATED)
        second.duplicated += 1

    def _resend(  # noqa: PLR0917 - internal, one call site per reason
        self,
        path: BondPath[K],
        number: int,
        packet: bytes,
        now: float,
        send_us: int,
        flags: int = 0,
    ) -> None:
        """IP packet ``number`` once more on ``path`` (a duplicate or a re-injection)."""
        seq = path.seq + 1
        word = (path.path_id << 24) | (seq & PATH_SEQ_MASK)
        datagram = self.codec.reseal_ip(number, packet, path.flags | flags, word, send_us)
        path.record(now, path.queue_delay(now), number, packet)
        path.vq += len(datagram) + DATAGRAM_OVERHEAD
        self._queue(path, datagram)

    def _send_v1(self, packets: list[bytes]) -> None:
        """v1: the client round-robins its live uplinks; the server uses the lowest-delay
        fresh path, as the Go server does."""
        seal = self.codec.seal_ip
        out = self._out
        usable = self._usable
        count = len(usable)
        server_best = self._v1_best if self.config.role is Role.SERVER else None
        for packet in packets:
            if server_best is not None:
                path = server_best
            else:
                self._rr = index = (self._rr + 1) % count
                path = usable[index]
            datagram = seal(packet)
            if datagram is None:
                continue
            path.tx_packets += 1
            path.tx_bytes += len(datagram)
            run = out.get(path.key)
            if run is None:
                out[path.key] = [datagram]
            else:
                run.append(datagram)

    def _queue(self, path: BondPath[K], datagram: bytes) -> None:
        if not datagram:
            return  # the codec's send key is used up (feature rekey): nothing may be sealed
        path.tx_packets += 1
        path.tx_bytes += len(datagram)
        run = self._out.get(path.key)
        if run is None:
            self._out[path.key] = [datagram]
        else:
            run.append(datagram)

    def _send_control(
        self, path: BondPath[K], packet_type: int, payload: bytes, now: float, flags: int = 0
    ) -> None:
        """A control packet on ``path``: with the v2 path fields, or as v1 (unnumbered)."""
        if self.v2:
            seq = path.record(now, path.queue_delay(now), 0, None)
            word = (path.path_id << 24) | (seq & PATH_SEQ_MASK)
            send_us = int(now * 1e6) & 0xFFFF_FFFF
            datagram = self.codec.seal_control(
                packet_type, payload, path.flags | flags, word, send_us
            )
        else:
            datagram = self.codec.seal_control(packet_type, payload)
        self._queue(path, datagram)

    def _send_echo(self, path: BondPath[K], payload: bytes, now: float) -> None:
        """The same payload back on the path it came by (v1: exactly the original's echo)."""
        self._send_control(path, _HEARTBEAT, payload, now, _ECHO)

    def send_handshakes(self, now: float) -> None:
        """Greet the server on every path (client, right after opening them)."""
        for path in self.paths:
            self._send_control(path, int(PacketType.HANDSHAKE), b"", now)

    # -- receiving ---------------------------------------------------------------------------

    def receive(
        self,
        key: K,
        datagrams: list[bytes],
        now: float,
        arrivals: list[float | None] | None = None,
    ) -> list[bytes]:
        """Open what arrived on path ``key``; return the IP packets ready for the TUN, in order.

        ``arrivals`` (one per datagram, where the kernel stamped it) are when each datagram
        reached the host: one-way delays are measured from them, so time spent waiting in a
        busy receiver's socket buffer is not taken for queueing in the path. A server learns a
        new path from its first authenticated datagram; a client drops what comes by a path it
        does not own."""
        path = self._by_key.get(key)
        codec = self.codec
        if path is None:
            if self.config.role is Role.CLIENT:
                codec.drops.counts[DropReason.FOREIGN_SOURCE] += len(datagrams)
                return []
            if len(self.paths) >= MAX_PATHS and not self._evictable(now):
                # every slot holds a fresh path: nothing from here could become one, so it is
                # refused before any decryption (each datagram counted once)
                codec.drops.counts[DropReason.PATH_LIMIT] += len(datagrams)
                return []
        ready: list[bytes] = []
        reorder = self.reorder
        v2 = self.v2
        server = self.config.role is Role.SERVER
        now_us = int(now * 1e6)
        for index, datagram in enumerate(datagrams):
            if path is None and not self._unknown_source_budget(now):
                # a flood from an address that is no path of this session burns its own small
                # share of decryptions, one per datagram (a batch is no single attempt), not
                # the session's
                codec.drops.counts[DropReason.UNKNOWN_SOURCE_BUDGET] += len(datagrams) - index
                break
            opened = codec.open(datagram)
            if opened is None:
                if codec.late_copy:  # the second copy of a duplicated packet
                    at = arrivals[index] if arrivals is not None else None
                    self._late_copy(path, datagram, now, now_us if at is None else int(at * 1e6))
                continue
            ptype, payload = opened
            if path is None:
                # v1 control packets are unnumbered and may be replays: a path they bring is
                # provisional until an IP packet or a fresh heartbeat confirms it
                path = self._learn(key, now, confirmed=v2 or ptype == _IP)
                if path is None:  # not reached: the room was checked above
                    codec.drops.counts[DropReason.PATH_LIMIT] += len(datagrams) - index - 1
                    return ready
            size = len(datagram)
            path.rx_packets += 1
            path.rx_bytes += size
            path.last_heard = now
            flags = codec.received_flags
            owd_s = 0.0
            at = arrivals[index] if arrivals is not None else None
            arrived = now if at is None else at
            if v2 and flags & _FIELDS:
                word = codec.received_path_word
                arrived_us = now_us if at is None else int(at * 1e6)
                owd_us = (arrived_us - codec.received_send_us) & 0xFFFF_FFFF
                ref = self._rx_ref_us
                if ref is None:
                    owd_s = self._rx_owd(owd_us)
                else:  # ``_rx_owd`` inlined
                    rel = (owd_us - ref) % US_MODULUS
                    owd_s = (rel - US_MODULUS if rel >= US_HALF else rel) / 1e6
                path.peer_path_id = word >> 24
                path.on_arrival(word & PATH_SEQ_MASK, owd_us, owd_s, size)
                if path.rx_count == 1:
                    self._refresh_hold(now)  # a path that starts delivering moves the ceiling
                if server:
                    priority = Priority.BACKUP if flags & _BACKUP else Priority.PRIMARY
                    if priority is not path.priority:
                        path.priority = priority
                        self._refresh()
            if not path.confirmed and ptype == _IP:
                self._confirm(path)
            if not path.alive and (ptype != _HEARTBEAT or self._revives(path, payload, now)):
                self._revive(path, now)
            if ptype == _IP:
                number = reorder.extend(codec.received_seq)
                if number > path.last_number:  # noqa: PLR1730 - max() is a call per packet
                    path.last_number = number
                path.last_data = now
                if v2:
                    self._feedback_due = True
                    skew = self._hold_ceiling_s - owd_s
                    hold = HOLD_MARGIN_S if skew < 0.0 else HOLD_MARGIN_S + HOLD_SKEW_FACTOR * skew
                    hold = min(hold, MAX_HOLD_S)
                else:
                    hold = self._v1_hold_s
                released = reorder.push(number, payload, arrived + hold)
                if released is None:
                    ready.append(payload)
                else:
                    ready += released
                    if reorder.held:
                        ready += self._release_lost(now)
            elif ptype == _HEARTBEAT:
                self._on_heartbeat(path, payload, flags, now)
            elif ptype == _FEEDBACK:
                self._on_feedback(payload, now)
        if path is not None and path.confirmed:
            self.last_heard = now
            if v2 and self._feedback_due and self._tick_at == _INF:
                self._tick_at = now + TICK_S
                self._active_until = now + ACTIVE_AFTER_DATA_S
        return ready

    def _late_copy(
        self, path: BondPath[K] | None, datagram: bytes, now: float, arrived_us: int
    ) -> None:
        """Count on its path a second copy whose packet the first copy delivered: the peer
        numbered it on that path, and a copy left uncounted reads as the path's loss. Only a
        copy numbered above what the path brought so far costs a decryption (a replay of an
        old one does not), and only an authentic one counts."""
        codec = self.codec
        codec.late_copy = False
        if path is None or not self.v2 or not path.rx_count:
            return
        word = int.from_bytes(datagram[14:18], "big")
        if word >> 24 != path.peer_path_id:
            return
        if unwrap(word & PATH_SEQ_MASK, path.rx_high, PATH_SEQ_MODULUS) <= path.rx_high:
            return
        fields = codec.authentic_copy(datagram)
        if fields is None:
            return
        word, send_us = fields
        owd_us = (arrived_us - send_us) & 0xFFFF_FFFF
        size = len(datagram)
        path.on_arrival(word & PATH_SEQ_MASK, owd_us, self._rx_owd(owd_us), size)
        path.rx_packets += 1
        path.rx_bytes += size
        path.last_heard = now

    def _learn(self, key: K, now: float, *, confirmed: bool) -> BondPath[K] | None:
        """A new path of the peer's (server), or None when every slot holds a fresh path: a
        provisional path goes first, then one silent for ``EVICTABLE_AFTER_S``, never a path
        that spoke lately (a replayer must not push the real ones out)."""
        if len(self.paths) >= MAX_PATHS:
            victims = self._evictable(now)
            if not victims:
                return None
            oldest = min(victims, key=lambda p: p.last_heard)
            if oldest.confirmed:
                self._events.append(("forgotten", oldest.label))
            self.remove_path(oldest.key)
        path = self.add_path(key, _label(key), now, confirmed=confirmed)
        path.confirm_after = self._newest_stamp
        if confirmed:
            self._events.append(("new", path.label))
        return path

    def _evictable(self, now: float) -> list[BondPath[K]]:
        """The paths a new one may replace: the provisional ones, else those silent for
        ``EVICTABLE_AFTER_S``."""
        return [p for p in self.paths if not p.confirmed] or [
            p for p in self.paths if now - p.last_heard > EVICTABLE_AFTER_S
        ]

    def _confirm(self, path: BondPath[K]) -> None:
        path.confirmed = True
        self._events.append(("new", path.label))
        self._refresh()

    def _unknown_source_budget(self, now: float) -> bool:
        """Token bucket of decryption attempts for datagrams from addresses that are no path."""
        tokens = min(
            UNKNOWN_SOURCE_BURST,
            self._unknown_tokens + (now - self._unknown_at) * UNKNOWN_SOURCE_PER_S,
        )
        self._unknown_at = now
        if tokens < 1.0:
            self._unknown_tokens = tokens
            return False
        self._unknown_tokens = tokens - 1.0
        return True

    def _revives(self, path: BondPath[K], payload: bytes, now: float) -> bool:
        """Whether a heartbeat may revive a dead path: only one stamped after it died (an echo of
        ours; a v1 echo is unnumbered, and a replayed old one must not bring a path back)."""
        stamp = unpack_heartbeat(payload)
        return stamp is not None and stamp >= self._wall_ns(path.died_at)

    def _rx_owd(self, owd_us: int) -> float:
        """A raw one-way delay as seconds relative to the first one seen (same clock pair)."""
        ref = self._rx_ref_us
        if ref is None:
            self._rx_ref_us = owd_us
            return 0.0
        rel = (owd_us - ref) % US_MODULUS
        return (rel - US_MODULUS if rel >= US_HALF else rel) / 1e6

    def _fb_owd(self, owd_us: int) -> float:
        ref = self._fb_ref_us
        if ref is None:
            self._fb_ref_us = owd_us
            return 0.0
        rel = (owd_us - ref) % US_MODULUS
        return (rel - US_MODULUS if rel >= US_HALF else rel) / 1e6

    def _release_lost(self, now: float) -> list[bytes]:
        """Gaps below every active path's latest delivered number were lost: each path is FIFO,
        so a missing packet can only still come on a path that has not passed it yet."""
        if now - self._started < ACTIVE_LANE_S:
            return []  # the peer's other paths may not have spoken yet: trust deadlines only
        horizon = -1
        for path in self.paths:
            active = path.alive and now - path.last_data < ACTIVE_LANE_S
            if active and (horizon < 0 or path.last_number < horizon):
                horizon = path.last_number
        if horizon < 0:
            return []
        return self.reorder.release_below(horizon)

    def _on_heartbeat(self, path: BondPath[K], payload: bytes, flags: int, now: float) -> None:
        is_echo = flags & _ECHO if self.v2 else self.config.role is Role.CLIENT
        if not is_echo:
            if not self.v2 and not self._fresh_v1_heartbeat(path, payload, now):
                return
            self._send_echo(path, payload, now)
            if not self.v2:
                stamp = unpack_heartbeat(payload)
                if stamp is not None:
                    self._v1_delay_sample(path, (self._wall_ns(now) - stamp) / 1e9)
            return
        stamp = unpack_heartbeat(payload)
        if stamp is None:
            return
        rtt = (self._wall_ns(now) - stamp) / 1e9
        # Echoes of heartbeats sent before a revival come back late, all at once: ignore them.
        if 0.0 <= rtt < 10.0 and (now - rtt) >= path.died_at:
            path.rtt_s = rtt if path.rtt_s is None else path.rtt_s + 0.125 * (rtt - path.rtt_s)
            if not self.v2 or not path.has_owd:
                self._refresh_delays()

    def _fresh_v1_heartbeat(self, path: BondPath[K], payload: bytes, now: float) -> bool:
        """A v1 heartbeat is unnumbered: it counts (an echo, a confirmed path) only when its
        stamp is within 30 s of now and newer than the last one on its path; a provisional path
        is confirmed only by one stamped after every heartbeat the session had seen when the
        path appeared, which a replay of a captured one cannot be."""
        stamp = unpack_heartbeat(payload)
        wall = self._wall_ns(now)
        if stamp is None or abs(wall - stamp) > V1_STAMP_WINDOW_NS or stamp <= path.last_stamp:
            self.codec.drops.counts[DropReason.STALE_HEARTBEAT] += 1
            return False
        path.last_stamp = stamp
        self._newest_stamp = max(self._newest_stamp, stamp)
        if not path.confirmed:
            if stamp <= path.confirm_after:
                return False  # provisional: no echo (no amplifier), no log line
            self._confirm(path)
        return True

    def _on_feedback(self, payload: bytes, now: float) -> None:
        entries = unpack_feedback(payload)
        if entries is None:
            self.codec.drops.counts[DropReason.MALFORMED_CONTROL] += 1
            return
        self.feedback_heard = now
        changed = False
        for entry in entries:
            path = self._by_id.get(entry.path_id)
            if path is None:
                continue
            changed |= path.on_feedback(
                entry.highest_seq,
                self._fb_owd(entry.owd_us),
                entry.datagrams,
                entry.received_bytes,
                entry.receiver_us,
                now,
            )
        if changed:
            self._refresh_delays()

    def _v1_delay_sample(self, path: BondPath[K], sample_s: float) -> None:
        old = path.v1_delay_s
        path.v1_delay_s = sample_s if old is None else old + 0.125 * (sample_s - old)

    # -- timers ------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        deadline = min(self._tick_at, self._heartbeat_at, self._housekeeping_at)
        held = self.reorder.next_deadline()
        if held is not None and held < deadline:
            deadline = held
        return None if deadline == _INF else deadline

    def on_timer(self, now: float) -> list[bytes]:
        """Run what is due; returns IP packets released for the TUN."""
        ready = self.reorder.expire(now)
        if now >= self._tick_at:
            self._tick(now)
        if now >= self._heartbeat_at:
            self._heartbeats(now)
        if now >= self._housekeeping_at:
            self._housekeeping(now)
        return ready

    def _tick(self, now: float) -> None:
        if self._reinjection:
            self._drain_reinjection(now)
        if self._feedback_due:
            self._feedback_due = False
            self._send_feedback(now)
        self._refresh_hold(now)
        self._check_loaded(now)
        loaded = any(p.seq > p.acked for p in self.paths if p.alive)
        if now < self._active_until or loaded or self._reinjection:
            self._tick_at = now + TICK_S
        else:
            self._tick_at = _INF

    def _send_feedback(self, now: float) -> None:
        receiver_us = int(now * 1e6)
        entries = [
            FeedbackEntry(
                p.peer_path_id,
                p.rx_high & PATH_SEQ_MASK,
                p.rx_count,
                p.rx_fb_bytes,
                p.rx_owd_us,
                receiver_us,
            )
            for p in self.paths
            if p.peer_path_id >= 0 and p.rx_count
        ]
        if not entries:
            return
        payload = pack_feedback(entries[:16])
        for path in self._control_paths():
            self._send_control(path, _FEEDBACK, payload, now)

    def _control_paths(self) -> list[BondPath[K]]:
        """Where feedback goes: every live primary (so it survives one dying), else any live."""
        primaries = [p for p in self._usable if p.priority is Priority.PRIMARY]
        return primaries or self._usable

    def _check_loaded(self, now: float) -> None:
        """A loaded path whose datagrams go unacknowledged while the peer is heard elsewhere is
        suspect: it is asked directly (a heartbeat on it) and dead if it does not answer soon.
        An answer means only the last datagrams were lost (nothing came after them to be
        acknowledged). If the peer is not heard at all, it is asked on the other paths."""
        for path in self.paths:
            if not path.alive:
                continue
            since = path.unacked_since()
            if since is None:
                path.suspect_at = _NEVER
                continue
            limit = min(
                max(DEAD_ACK_FACTOR * path.ack_delay_s, LOADED_DEAD_MIN_S), LOADED_DEAD_MAX_S
            )
            if now - since <= limit:
                continue
            if path.suspect_at > since:
                if path.last_heard > path.suspect_at:  # it answered: a tail loss, not a death
                    path.acked = path.seq
                    path.suspect_at = _NEVER
                elif now - path.suspect_at > self._suspect_wait(path):
                    self._declare_dead(path, now)
                continue
            heard_elsewhere = max(
                (p.last_heard for p in self.paths if p is not path), default=_NEVER
            )
            if heard_elsewhere > since + 0.5 * limit:
                path.suspect_at = now
                self._heartbeat(path, now)
            elif now - path.urgent_at > limit:
                path.urgent_at = now
                for other in self._usable:
                    if other is not path:
                        self._heartbeat(other, now)

    @staticmethod
    def _suspect_wait(path: BondPath[K]) -> float:
        """How long a suspect path gets to answer a heartbeat: 1.5 round trips, bounded."""
        rtt = path.rtt_s if path.rtt_s is not None else 2 * path.ack_delay_s
        return min(max(SUSPECT_ANSWER_FACTOR * rtt, SUSPECT_MIN_WAIT_S), SUSPECT_MAX_WAIT_S)

    def _declare_dead(self, path: BondPath[K], now: float) -> None:
        path.alive = False
        path.died_at = now
        path.next_heartbeat = now
        self._events.append(("down", path.label))
        self._refresh()
        if not self.v2:
            return
        lost = path.unacked_packets()
        path.reinjected += len(lost)
        queue = self._reinjection
        queue.extend(lost)
        while len(queue) > MAX_REINJECTION_QUEUE:
            queue.popleft()
        self._drain_reinjection(now)

    def _drain_reinjection(self, now: float) -> None:
        """Re-send what a dead path swallowed, oldest first, as fast as the live paths take it
        without queueing beyond ``MAX_QUEUE_DELAY_S`` (a burst would overflow a sibling).
        Packets the receiver's replay window would no longer take are dropped: they would only
        be counted as replays there."""
        queue = self._reinjection
        send_us = int(now * 1e6) & 0xFFFF_FFFF
        oldest_useful = self.codec.last_seq - REINJECT_WINDOW
        while queue and self._usable:
            target = min(
                self._usable, key=lambda p: p.sched_owd_s + p.queue_delay(now) + p.penalty_s
            )
            if target.queue_delay(now) > MAX_QUEUE_DELAY_S:
                return
            number, packet = queue.popleft()
            if number < oldest_useful and number <= self.codec.last_seq:
                self.reinjection_dropped += 1
                continue
            self._resend(target, number, packet, now, send_us, _DUPLICATED)

    def _revive(self, path: BondPath[K], now: float) -> None:
        path.revive(now)
        self._events.append(("up", path.label))
        self._refresh()

    def _heartbeats(self, now: float) -> None:
        """Client: heartbeat every path whose time has come; schedule the next."""
        upcoming = _INF
        for path in self.paths:
            if now >= path.next_heartbeat:
                self._heartbeat(path, now)
                path.next_heartbeat = now + self._heartbeat_interval(path)
            upcoming = min(upcoming, path.next_heartbeat)
        self._heartbeat_at = upcoming
        self._check_idle(now)

    def _heartbeat(self, path: BondPath[K], now: float) -> None:
        self._send_control(path, _HEARTBEAT, pack_heartbeat(self._wall_ns(now)), now)

    def _heartbeat_interval(self, path: BondPath[K]) -> float:
        if not self.v2:
            return V1_HEARTBEAT_INTERVAL_S
        backup = path.priority is Priority.BACKUP
        if path.alive:
            return BACKUP_HEARTBEAT_S if backup else PRIMARY_HEARTBEAT_S
        return DEAD_BACKUP_HEARTBEAT_S if backup else DEAD_PRIMARY_HEARTBEAT_S

    def _check_idle(self, now: float) -> None:
        for path in self.paths:
            if path.alive and now - path.last_heard > self._idle_dead_after(path):
                self._declare_dead(path, now)

    def _idle_dead_after(self, path: BondPath[K]) -> float:
        if not self.v2:
            return V1_CLIENT_DEAD_AFTER_S
        interval = BACKUP_HEARTBEAT_S if path.priority is Priority.BACKUP else PRIMARY_HEARTBEAT_S
        return IDLE_DEAD_HEARTBEATS * interval

    def _housekeeping(self, now: float) -> None:
        self._housekeeping_at = now + HOUSEKEEPING_S
        if self.config.role is Role.SERVER:
            for path in list(self.paths):
                silent = now - path.last_heard
                if silent > max(PATH_FORGET_S, 4 * self._heartbeat_interval(path)):
                    self._events.append(("forgotten", path.label))
                    self.remove_path(path.key)
                elif self.v2 and path.alive and silent > self._idle_dead_after(path):
                    self._declare_dead(path, now)
            if not self.v2:
                self._refresh_v1(now)
        self._refresh_hold(now)

    # -- derived state -------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Recompute which paths may carry data and their fixed penalties."""
        alive = [p for p in self.paths if p.alive and p.confirmed]
        for path in self.paths:
            path.flags = 0
            if self.v2:
                path.flags = _FIELDS
                if self.config.role is Role.CLIENT and path.priority is Priority.BACKUP:
                    path.flags |= _BACKUP
        self._usable = alive
        self._duplicable = sum(1 for p in alive if p.priority is Priority.PRIMARY)
        self._refresh_penalties()
        if self.config.role is Role.SERVER and not self.v2:
            self._refresh_v1(None)

    def _refresh_penalties(self) -> None:
        """Backups, and primaries far slower one way than the fastest live primary, carry data
        only when nothing better is alive.

        The guard against a bond slower than its best path: one TCP flow striped over paths
        that differ by more than ``FAR_SKEW_S`` one way gets the slow path's round trip and
        reordering for little more capacity (measured, 2 x 50 Mbit/s at 10 vs 100 ms: 41.8
        Mbit/s bonded against 44.1 on the fast path alone; 10 vs 40 ms: 81 against 47)."""
        primaries = [p for p in self._usable if p.priority is Priority.PRIMARY]
        fastest = min((p.sched_owd_s for p in primaries), default=0.0)
        for path in self.paths:
            if path.priority is Priority.BACKUP:
                path.penalty_s = BACKUP_PENALTY_S
                continue
            excess = path.sched_owd_s - fastest
            far = excess > (FAR_SKEW_S - FAR_HYSTERESIS_S if path.far else FAR_SKEW_S)
            if far != path.far:
                path.far = far
                self._events.append((FAR_EVENT if far else NEAR_EVENT, path.label))
            path.penalty_s = BACKUP_PENALTY_S if far else 0.0

    def _refresh_delays(self) -> None:
        """Each path's one-way delay above the lowest, for earliest-arrival scheduling: from the
        peer's feedback where there is some, else half the heartbeat round trip."""
        known = [p.base_delay for p in self.paths if p.has_owd]
        lowest = min(known) if known else 0.0
        rtts = [p.rtt_s for p in self.paths if p.rtt_s is not None]
        lowest_rtt = min(rtts) if rtts else 0.0
        for path in self.paths:
            if path.has_owd:
                path.sched_owd_s = path.base_delay - lowest
            elif path.rtt_s is not None:
                path.sched_owd_s = (path.rtt_s - lowest_rtt) / 2
            else:
                path.sched_owd_s = 0.0
        self._refresh_penalties()

    def _refresh_hold(self, now: float) -> None:
        """The latest a packet on an active path can arrive, relative to the earliest: the hold
        ceiling of the reorder buffer (v2). At the start, before the peer's slower paths have
        spoken, at least ``STARTUP_HOLD_S``."""
        if self.v2:
            elapsed = now - self._hold_refreshed
            self._hold_refreshed = now
            ceiling = STARTUP_HOLD_S if now - self._started < ACTIVE_LANE_S else 0.0
            for path in self.paths:
                path.decay_peak(elapsed)
                if path.alive and path.rx_count:
                    late = path.rx_owd_peak_s + JITTER_ALLOWANCE * path.rx_jitter_s
                    ceiling = max(ceiling, late)
            self._hold_ceiling_s = ceiling

    def _refresh_v1(self, now: float | None) -> None:
        """v1 server: the fresh path of lowest heartbeat delay carries the downlink, and the
        uplink is held in order for 1.5 x the paths' delay spread plus a margin."""
        paths = self.paths
        if not paths:
            self._v1_best = None
            return
        newest = max(p.last_heard for p in paths)
        reference = newest if now is None else now
        fresh = [p for p in paths if reference - p.last_heard <= PATH_STALE_AFTER_S]
        if fresh:
            self._v1_best = min(fresh, key=lambda p: 0.5 if p.v1_delay_s is None else p.v1_delay_s)
        else:
            self._v1_best = max(paths, key=lambda p: p.last_heard)
        delays = [p.v1_delay_s for p in fresh if p.v1_delay_s is not None]
        spread = max(delays) - min(delays) if len(delays) > 1 else 0.0
        self._v1_hold_s = min(
            max(V1_SPREAD_FACTOR * spread + V1_HOLD_MARGIN_S, V1_MIN_HOLD_S), V1_MAX_HOLD_S
        )

    def _wall_ns(self, now: float) -> int:
        return int(now * 1e9) + self.config.wall_offset_ns

    # -- reports -------------------------------------------------------------------------------

    def snapshot(self, now: float) -> BondSnapshot:
        """Plain numbers for stats, metrics and the TUI; rates and shares since the last call."""
        total = sum(p.tx_bytes - p.snap_tx_bytes for p in self.paths)
        total_rx = sum(p.rx_bytes - p.snap_rx_bytes for p in self.paths)
        elapsed = now - self._snap_at
        self._snap_at = now
        per_mbit = 8 / 1e6 / elapsed if elapsed > 0 else 0.0
        reports = []
        delivered = capacity = 0.0
        for p in self.paths:
            sent = p.tx_bytes - p.snap_tx_bytes
            got = p.rx_bytes - p.snap_rx_bytes
            p.snap_tx_bytes, p.snap_rx_bytes = p.tx_bytes, p.rx_bytes
            if p.alive and p.has_owd:
                delivered += p.delivery_rate
                capacity += p.rate
            reports.append(
                PathReport(
                    label=p.label,
                    alive=p.alive,
                    priority=p.priority.name.lower(),
                    rtt_ms=None if p.rtt_s is None else round(p.rtt_s * 1000, 2),
                    owd_ms=round(p.sched_owd_s * 1000, 2) if p.has_owd else None,
                    queue_ms=round(p.queue_s * 1000, 2) if p.has_owd else None,
                    jitter_ms=round(p.rx_jitter_s * 1000, 2),
                    rate_mbit=round(p.rate * 8 / 1e6, 2),
                    delivery_mbit=round(p.delivery_rate * 8 / 1e6, 2),
                    loss=round(p.loss, 4),
                    share=round(sent / total, 3) if total else 0.0,
                    tx_mbit=round(sent * per_mbit, 2),
                    rx_mbit=round(got * per_mbit, 2),
                    rx_share=round(got / total_rx, 3) if total_rx else 0.0,
                    idle_s=round(now - p.last_heard, 2),
                    tx_packets=p.tx_packets,
                    tx_bytes=p.tx_bytes,
                    rx_packets=p.rx_packets,
                    rx_bytes=p.rx_bytes,
                    reinjected=p.reinjected,
                    duplicated=p.duplicated,
                )
            )
        r = self.reorder
        hold = self._hold_ceiling_s if self.v2 else self._v1_hold_s
        loaded = capacity > 0 and delivered > 0.05 * capacity
        return BondSnapshot(
            paths=tuple(reports),
            reorder=ReorderReport(
                held=r.held,
                reordered=r.reordered,
                released_late=r.released_late,
                lost=r.lost,
                known_lost=r.known_lost,
                expired=r.expired,
                hold_ms=round(hold * 1000, 1),
            ),
            efficiency=round(min(delivered / capacity, 1.0), 3) if loaded else None,
        )


def _label(key: K) -> str:
    """A readable name for a learnt path: ``host:port`` of a client address."""
    if isinstance(key, tuple) and len(key) >= 2:
        host, port = str(key[0]).removeprefix("::ffff:"), key[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(key)
