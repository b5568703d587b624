"""The server's data plane: UDP datagrams ⇄ sessions ⇄ TUN, driven by event-loop readers.

Uplink: a datagram's session id finds the session, the session's codec opens it, its source
address becomes (or refreshes) a path, and an IP packet whose inner source is the session's own
address goes through the session's reorder buffer to the TUN. Heartbeats are echoed on the path
they came from. Downlink: a TUN packet's destination address finds the session, which seals it
for its lowest-delay fresh path (v1 clients) or the next path of its weighted schedule (clients
that negotiated path-probe, whose paths we probe); the datagram leaves from the address the
client sent to. Each reader drains its fd until it would block (at most ``DRAIN_BUDGET`` per
wake-up, for fairness). Nothing here logs per packet.
"""

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from fluxify.linux.tun_writer import InOrderTunWriter
from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.header import HeartbeatFlag, PacketType, peek_session_id
from fluxify.protocol.heartbeat import (
    PATH_STALE_AFTER_S,
    round_trip_ns,
    unpack_heartbeat,
    unpack_received_bytes,
)
from fluxify.protocol.paths import PathSnapshot, PathState
from fluxify.protocol.pathweights import PathWeights, normalize
from fluxify.protocol.reorder import ReorderBuffer
from fluxify.protocol.scheduler import LowestDelay, RoundRobin
from fluxify.protocol.session import DataSession
from fluxify.server.udp_socket import (
    ANCILLARY_SPACE,
    Address,
    Ancillary,
    path_label,
    reply_ancillary,
)

log = logging.getLogger(__name__)

DRAIN_BUDGET = 256
RECEIVE_BUFFER_BYTES = 2048  # a v1 datagram is at most 1450 bytes; more fails its length check
TUN_READ_BYTES = 65536
PATH_IDLE_S = 30.0  # a path silent this long is forgotten (NAT rebinding leaves old ones)
SESSION_IDLE_S = 120.0  # a session with no authenticated uplink this long is expired
MAX_PATHS_PER_SESSION = 16
REORDER_MARGIN_S = 0.015
MAX_STRIPING_RTT_SPREAD_S = 0.015  # downlink striping only over paths this close in RTT
MIN_REORDER_HOLD_S = 0.020
MAX_REORDER_HOLD_S = 0.200

_IP = int(PacketType.IP)
_HEARTBEAT = int(PacketType.HEARTBEAT)
_PROBE_ECHO = int(HeartbeatFlag.PROBE_ECHO)


class ServerPath(PathState):
    """A client source address of one session, with the ancillary data to answer it."""

    __slots__ = ("address", "ancillary")

    def __init__(self, address: Address, ancillary: Ancillary, now: float) -> None:
        super().__init__(path_label(address), now)
        self.address = address
        self.ancillary = ancillary


class ServerSession:
    """Data-plane state of one client session: codec, paths, downlink choice, inner addresses."""

    __slots__ = (
        "codec",
        "data_packets",
        "data_packets_probed",
        "downlink",
        "identity",
        "inner_v4",
        "inner_v6",
        "last_seen_s",
        "paths",
        "rate_report",
        "reorder",
        "scheduler",
        "session_id",
        "weights",
    )

    def __init__(
        self, codec: DataSession, identity: str, inner_v4: bytes, inner_v6: bytes, now: float
    ) -> None:
        self.codec = codec
        self.session_id = codec.session_id
        self.identity = identity
        self.inner_v4 = inner_v4
        self.inner_v6 = inner_v6
        self.last_seen_s = now
        self.paths: dict[Address, ServerPath] = {}
        self.scheduler: LowestDelay[ServerPath] = LowestDelay(PATH_STALE_AFTER_S)
        self.reorder = ReorderBuffer()
        # Set for clients that negotiated path-probe: downlink spread over paths by weight.
        self.downlink: RoundRobin[ServerPath] | None = None
        self.weights: PathWeights | None = None
        self.rate_report = False  # rate-report negotiated: probes and heartbeats carry counters
        self.data_packets = 0  # IP packets to and from the TUN, for the probe cadence
        self.data_packets_probed = 0  # data_packets at the last probe round

    def refresh_downlink(self, now: float) -> None:
        """Which paths may carry downlink: fresh ones (heard within the stale time)."""
        if self.downlink is None:
            return
        paths = list(self.paths.values())
        for path in paths:
            path.alive = now - path.last_rx_s <= self.scheduler.stale_after_s
        delays = [p.delay_s for p in paths if p.alive and p.delay_s is not None]
        if len(delays) > 1 and max(delays) - min(delays) > MAX_STRIPING_RTT_SPREAD_S:
            # Measured: striping one TCP flow over paths this far apart in delay gave less than
            # the best path alone (25-35 vs 47 Mbit/s on 50/20 ms + 30/60 ms). Until the
            # downlink is scheduled per flow, use the lowest-delay fresh path only.
            best = min((p for p in paths if p.alive), key=PathState.rank_delay)
            for path in paths:
                path.alive = path is best
        self.downlink.refresh(paths)

    def tune_reorder_hold(self, now: float) -> None:
        """Hold out-of-order packets about as long as the paths' delays differ, plus margin."""
        delays = [
            p.delay_s
            for p in self.paths.values()
            if p.delay_s is not None and now - p.last_rx_s <= self.scheduler.stale_after_s
        ]
        spread = max(delays) - min(delays) if len(delays) > 1 else 0.0
        self.reorder.hold_s = min(
            max(1.5 * spread + REORDER_MARGIN_S, MIN_REORDER_HOLD_S), MAX_REORDER_HOLD_S
        )


@dataclass(frozen=True)
class SessionSnapshot:
    session_id: int
    identity: str
    inner_v4: str
    idle_s: float
    paths: tuple[PathSnapshot, ...]


class ServerDataPlane:
    """Owns the UDP socket's and the TUN's readers and every session's data-plane state.

    ``install``/``remove`` are called by the control plane; ``sweep`` once a second by the
    owner. ``on_expire(session_id)`` tells the owner a session timed out here. Not thread-safe:
    everything runs on one event loop.
    """

    def __init__(
        self,
        tun_fd: int,
        sock: socket.socket,
        *,
        on_expire: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.tun_fd = tun_fd
        self.sock = sock
        self.drops = DropCounters()
        self.sessions: dict[int, ServerSession] = {}
        self.by_inner: dict[bytes, ServerSession] = {}
        self._on_expire = on_expire
        self._clock = clock
        self._wall_clock_ns = wall_clock_ns
        self.tun = InOrderTunWriter(tun_fd, self.drops, clock)
        self.tun_packets_read = 0

    # -- sessions (control plane side) ------------------------------------------------------

    def install(
        self,
        session_id: int,
        key: bytes,
        identity: str,
        inner_v4: IPv4Address,
        inner_v6: IPv6Address | None,
        *,
        stale_after_s: float | None = None,
        probing: bool = False,
        rate_report: bool = False,
    ) -> None:
        """Start accepting ``session_id``; a session holding the same addresses is replaced.

        ``stale_after_s``: how long a silent path still carries downlink (default: the v1 5 s).
        ``probing``: the client echoes our probes (path-probe), so downlink goes over every fresh
        path by queue-delay weight instead of only the lowest-delay one. ``rate_report`` (with
        ``probing``): probes carry our received bytes per path, heartbeats the client's, and the
        downlink weights follow the delivered rates.
        """
        codec = DataSession(session_id, key, drops=self.drops)
        v6 = inner_v6.packed if inner_v6 is not None else b""
        session = ServerSession(codec, identity, inner_v4.packed, v6, self._clock())
        session.scheduler.stale_after_s = stale_after_s or PATH_STALE_AFTER_S
        if probing:
            session.downlink = RoundRobin()
            session.weights = PathWeights()
            session.rate_report = rate_report
        for key_bytes in (session.inner_v4, v6):
            old = self.by_inner.get(key_bytes)
            if old is not None:
                self.remove(old.session_id)
        self.sessions[session_id] = session
        self.by_inner[session.inner_v4] = session
        if v6:
            self.by_inner[v6] = session

    def remove(self, session_id: int) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        self.tun.forget(session.reorder)
        for key in (session.inner_v4, session.inner_v6):
            if self.by_inner.get(key) is session:
                del self.by_inner[key]

    # -- event loop --------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tun.attach(loop)
        loop.add_reader(self.sock.fileno(), self.on_datagrams)
        loop.add_reader(self.tun_fd, self.on_tun_packets)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self.sock.fileno())
        loop.remove_reader(self.tun_fd)
        self.tun.detach()

    def on_datagrams(self) -> None:
        """Drain the UDP socket: open, learn paths, write IP packets, echo heartbeats."""
        recvmsg = self.sock.recvmsg
        sessions = self.sessions
        counts = self.drops.counts
        self._drain_datagrams(recvmsg, sessions, counts, self._clock())

    def _drain_datagrams(
        self,
        recvmsg: Callable[[int, int], tuple[bytes, list[tuple[int, int, bytes]], int, Address]],
        sessions: dict[int, ServerSession],
        counts: list[int],
        now: float,
    ) -> None:
        for _ in range(DRAIN_BUDGET):
            try:
                data, ancdata, _flags, address = recvmsg(RECEIVE_BUFFER_BYTES, ANCILLARY_SPACE)
            except BlockingIOError:
                return
            except OSError:  # a queued ICMP error on the socket; the next read goes on
                continue
            session = sessions.get(peek_session_id(data))
            if session is None:
                reason = DropReason.UNKNOWN_SESSION if len(data) >= 50 else DropReason.TOO_SHORT
                counts[reason] += 1
                continue
            opened = session.codec.open(data)
            if opened is None:
                continue
            path = session.paths.get(address)
            if path is None:
                path = self._new_path(session, address, ancdata, now)
            path.rx_packets += 1
            path.rx_bytes += len(data)
            path.last_rx_s = now
            session.last_seen_s = now
            ptype, payload = opened
            if ptype == _IP:
                self._deliver(session, payload, now)
            elif ptype == _HEARTBEAT:
                if session.codec.received_flags & _PROBE_ECHO:
                    self._probe_returned(session, path, payload, now)
                else:
                    self._echo(session, path, payload, now)

    def _deliver(self, session: ServerSession, packet: bytes, now: float) -> None:
        if packet[0] >> 4 == 4:
            own = packet[12:16] == session.inner_v4
        else:
            own = packet[8:24] == session.inner_v6
        if not own:
            self.drops.counts[DropReason.SPOOFED_SOURCE] += 1
            return
        session.data_packets += 1
        self.tun.deliver(session.reorder, session.codec.received_seq, packet, now)

    def _echo(self, session: ServerSession, path: ServerPath, payload: bytes, now: float) -> None:
        self._send(path, session.codec.seal_echo(payload))
        stamp_ns = unpack_heartbeat(payload)
        if stamp_ns is not None and session.weights is None:  # probing sessions use true RTT
            path.add_delay_sample((self._wall_clock_ns() - stamp_ns) / 1e9)
            session.scheduler.refresh(list(session.paths.values()), now)
        if session.rate_report and session.weights is not None:
            received = unpack_received_bytes(payload)  # what the client got on this path
            paths = list(session.paths.values())
            if received is not None and session.weights.on_report(path, received, paths, now):
                session.refresh_downlink(now)

    def _probe_returned(
        self, session: ServerSession, path: ServerPath, payload: bytes, now: float
    ) -> None:
        rtt_ns = round_trip_ns(payload, self._wall_clock_ns())
        if rtt_ns is None or session.weights is None:
            return
        path.add_delay_sample(rtt_ns / 1e9)
        if session.weights.on_sample(path, rtt_ns / 1e9, now):
            normalize(list(session.paths.values()))
            session.refresh_downlink(now)

    def send_probes(self, *, idle_too: bool = True) -> None:
        """One probe on every path of every probing session that moved IP packets since the
        last call, and with ``idle_too`` of the other probing sessions as well."""
        for session in self.sessions.values():
            if session.downlink is None:
                continue
            busy = session.data_packets != session.data_packets_probed
            session.data_packets_probed = session.data_packets
            if not (busy or idle_too):
                continue
            for path in session.paths.values():
                received = path.rx_bytes if session.rate_report else None
                self._send(path, session.codec.seal_probe(self._wall_clock_ns(), received))

    def _new_path(
        self,
        session: ServerSession,
        address: Address,
        ancdata: list[tuple[int, int, bytes]],
        now: float,
    ) -> ServerPath:
        if len(session.paths) >= MAX_PATHS_PER_SESSION:
            oldest = min(session.paths.values(), key=lambda p: p.last_rx_s)
            del session.paths[oldest.address]
        path = ServerPath(address, reply_ancillary(ancdata), now)
        session.paths[address] = path
        session.scheduler.refresh(list(session.paths.values()), now)
        session.refresh_downlink(now)
        log.info("session %08x (%s): new path %s", session.session_id, session.identity, path.label)
        return path

    def on_tun_packets(self) -> None:
        """Drain the TUN: find each packet's session by destination and send it on its best path."""
        read = os.read
        fd = self.tun_fd
        by_inner = self.by_inner
        counts = self.drops.counts
        for _ in range(DRAIN_BUDGET):
            try:
                packet = read(fd, TUN_READ_BYTES)
            except BlockingIOError:
                return
            if not packet:
                continue
            self.tun_packets_read += 1
            version = packet[0] >> 4
            key = packet[16:20] if version == 4 else packet[24:40] if version == 6 else b""
            session = by_inner.get(key)
            if session is None:
                counts[DropReason.UNKNOWN_DESTINATION] += 1
                continue
            downlink = session.downlink
            path = downlink.pick() if downlink is not None else session.scheduler.best
            if path is None:
                counts[DropReason.NO_PATH] += 1
                continue
            datagram = session.codec.seal_ip(packet)
            if datagram is not None:
                session.data_packets += 1
                self._send(path, datagram)

    def _send(self, path: ServerPath, datagram: bytes) -> None:
        try:
            self.sock.sendmsg([datagram], path.ancillary, 0, path.address)
        except BlockingIOError:
            self.drops.counts[DropReason.QUEUE_FULL] += 1
        except OSError:
            self.drops.counts[DropReason.SEND_FAILED] += 1
        else:
            path.tx_packets += 1
            path.tx_bytes += len(datagram)

    # -- housekeeping (once a second) ----------------------------------------------------------

    def sweep(self) -> None:
        """Forget idle paths, expire idle sessions, re-rank paths as they go stale."""
        now = self._clock()
        for session in list(self.sessions.values()):
            if now - session.last_seen_s > SESSION_IDLE_S:
                log.info(
                    "session %08x (%s) expired after %.0f s without traffic",
                    session.session_id,
                    session.identity,
                    SESSION_IDLE_S,
                )
                self.remove(session.session_id)
                if self._on_expire is not None:
                    self._on_expire(session.session_id)
                continue
            for address, path in list(session.paths.items()):
                if now - path.last_rx_s > PATH_IDLE_S:
                    del session.paths[address]
                    log.info("session %08x: path %s forgotten", session.session_id, path.label)
            session.scheduler.refresh(list(session.paths.values()), now)
            session.refresh_downlink(now)
            session.tune_reorder_hold(now)

    def snapshot(self) -> list[SessionSnapshot]:
        now = self._clock()
        return [
            SessionSnapshot(
                session_id=s.session_id,
                identity=s.identity,
                inner_v4=str(IPv4Address(s.inner_v4)),
                idle_s=round(now - s.last_seen_s, 1),
                paths=tuple(p.snapshot(now) for p in s.paths.values()),
            )
            for s in self.sessions.values()
        ]
