"""The server's data plane: UDP datagrams ⇄ one bond engine per session ⇄ TUN, on one loop.

It moves bytes and makes no decisions. A datagram's session id finds the session; consecutive
datagrams of one session and source address go to its engine as one batch, and the IP packets
the engine releases (in order) are written to the TUN once their inner source is checked. A TUN
packet's destination address finds the session; the engine returns per-path runs of datagrams,
sent with the ancillary data that makes them leave from the address the client used. One timer
serves every engine's deadlines. Each reader drains its fd until it would block (at most
``DRAIN_BUDGET`` per wake-up, for fairness); a full read shared by several sessions gives each
at most an equal share (``_share``). While datagrams stream in small batches the socket is read
on a short timer instead of at each one (``read_moderation``). Nothing here logs per packet.
"""

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from fluxify.linux import rx_timestamps, tun_offload, udp_offload
from fluxify.linux.engine_timer import EngineTimers
from fluxify.linux.read_moderation import ModeratedReaders
from fluxify.linux.tun_offload import TunReader
from fluxify.linux.udp_offload import UdpSender
from fluxify.protocol.bond import BondConfig, BondEngine, BondSnapshot, Role
from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.header import (
    MIN_DATAGRAM_SIZE,
    SESSION_ID,
    SESSION_ID_OFFSET,
    peek_session_id,
)
from fluxify.protocol.keys import KeySchedule
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
RECEIVE_ANCILLARY_SPACE = ANCILLARY_SPACE + udp_offload.GRO_SPACE
TIMER_DRAIN_ROUNDS = 8  # before deadlines run, read up to 8 x DRAIN_BUDGET waiting datagrams
SESSION_IDLE_S = 120.0  # a session with no authenticated datagram this long is expired
SESSION_SHARE_MIN = 32  # of a full read, what a session may always keep
PATH_SET_EVENTS = frozenset({"new", "forgotten"})  # the engine's events that change its paths

# one session's consecutive datagrams from one address, as the drain collected them
_Run = tuple[
    "ServerSession", Address, list[tuple[int, int, bytes]], list[bytes], list[float | None]
]


class ServerSession:
    """Data-plane state of one client session: its engine, inner addresses, reply ancillaries."""

    __slots__ = (
        "ancillary",
        "csum_partial",
        "engine",
        "identity",
        "inner_v4",
        "inner_v6",
        "session_id",
    )

    def __init__(
        self,
        engine: BondEngine[Address],
        identity: str,
        inner_v4: bytes,
        inner_v6: bytes,
        csum_partial: bool = False,
    ) -> None:
        self.engine = engine
        self.session_id = engine.codec.session_id
        self.identity = identity
        self.inner_v4 = inner_v4
        self.inner_v6 = inner_v6
        self.ancillary: dict[Address, Ancillary] = {}
        self.csum_partial = csum_partial  # feature csum-partial: TCP checksums may stay partial


@dataclass(frozen=True)
class SessionSnapshot:
    session_id: int
    identity: str
    inner_v4: str
    idle_s: float
    bond_v2: bool
    bond: BondSnapshot


class ServerDataPlane:
    """Owns the UDP socket's and the TUN's readers and every session's engine.

    ``install``/``remove`` are called by the control plane; ``sweep`` once a second by the
    owner. ``on_expire(session_id)`` tells the owner a session timed out here;
    ``on_paths_changed()`` that ``confirmed_paths()`` may have changed (a path confirmed or
    forgotten, a session gone). Not thread-safe: everything runs on one event loop.
    """

    def __init__(
        self,
        tun_fd: int,
        sock: socket.socket,
        *,
        on_expire: Callable[[int], None] | None = None,
        on_paths_changed: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tun_fd = tun_fd
        self.sock = sock
        self.drops = DropCounters()
        self.sessions: dict[int, ServerSession] = {}
        self.by_inner: dict[bytes, ServerSession] = {}
        self._on_expire = on_expire
        self._on_paths_changed = on_paths_changed
        self._clock = clock
        self._timers = EngineTimers(self._on_timer)
        self.tun = tun_offload.tun_writer(tun_fd, self.drops)
        self.tun_reader = TunReader(tun_fd, self.drops)
        self.tun_reader.partial_for = self._takes_partial
        tso, uso = tun_offload.enable_offloads(tun_fd) if self.tun_reader.vnet else (False, False)
        self.tun_packets_read = 0
        self.sender = UdpSender(sock, self.drops.counts, gso=udp_offload.gso_supported(sock))
        self.gro = udp_offload.enable_gro(sock)
        self._rx_buffer = bytearray(
            udp_offload.GRO_BUFFER_BYTES if self.gro else RECEIVE_BUFFER_BYTES
        )
        self._rx_view = memoryview(self._rx_buffer)
        self.socket_reader = ModeratedReaders([sock.fileno()], self.on_datagrams)
        log.info(
            "data plane offloads: UDP GSO %s, UDP GRO %s, TUN TSO %s, TUN USO %s",
            "on" if self.sender.gso else "off",
            "on" if self.gro else "off",
            "on" if tso else "off",
            "on" if uso else "off",
        )

    # -- sessions (control plane side) ------------------------------------------------------

    def install(
        self,
        session_id: int,
        key: bytes,
        identity: str,
        inner_v4: IPv4Address,
        inner_v6: IPv6Address | None,
        *,
        v2: bool = False,
        keys: KeySchedule | None = None,
        csum_partial: bool = False,
    ) -> None:
        """Start accepting ``session_id``; a session holding the same addresses is replaced.

        ``v2``: the client negotiated ``bond-v2`` (per-path numbers, feedback, numbered control);
        ``keys``: it negotiated ``rekey`` (per-direction key epochs, rotated by the control plane);
        ``csum_partial``: it negotiated ``csum-partial`` (TCP checksums may stay partial).
        """
        now = self._clock()
        codec = DataSession(session_id, key, drops=self.drops, numbered_control=v2, keys=keys)
        offset = time.time_ns() - int(now * 1e9)
        engine: BondEngine[Address] = BondEngine(
            codec, BondConfig(Role.SERVER, v2, wall_offset_ns=offset), now
        )
        v6 = inner_v6.packed if inner_v6 is not None else b""
        session = ServerSession(engine, identity, inner_v4.packed, v6, csum_partial)
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
        self._timers.forget(session_id)
        for key in (session.inner_v4, session.inner_v6):
            if self.by_inner.get(key) is session:
                del self.by_inner[key]
        if self._on_paths_changed is not None:
            self._on_paths_changed()

    def confirmed_paths(self) -> list[Address]:
        """The client addresses every live session's engine holds as confirmed paths."""
        return [p.key for s in self.sessions.values() for p in s.engine.paths if p.confirmed]

    def _takes_partial(self, packet: bytes | bytearray) -> bool:
        """Whether the session ``packet`` goes to negotiated ``csum-partial``."""
        key = packet[16:20] if packet[0] >> 4 == 4 else packet[24:40]
        session = self.by_inner.get(bytes(key))
        return session is not None and session.csum_partial

    # -- event loop --------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.socket_reader.attach(loop)
        loop.add_reader(self.tun_fd, self.on_tun_packets)
        self._timers.attach(loop)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.socket_reader.detach()
        loop.remove_reader(self.tun_fd)
        self._timers.detach()

    def on_datagrams(self) -> int:
        """Drain the UDP socket; hand each session's consecutive datagrams from one address to
        its engine as one batch. Returns how many datagrams were read."""
        recvmsg_into = self.sock.recvmsg_into
        buffer = self._rx_buffer
        buffers = [buffer]
        view = self._rx_view
        unpack_sid = SESSION_ID.unpack_from
        gro = self.gro
        segment_size = udp_offload.gro_segment_size
        sessions = self.sessions
        counts = self.drops.counts
        now = self._clock()
        offset = rx_timestamps.wall_minus_monotonic()
        stamp = rx_timestamps.arrival
        current: ServerSession | None = None
        current_address: Address | None = None
        batch: list[bytes] = []
        arrivals: list[float | None] = []
        runs: list[_Run] = []
        read = 0
        while read < DRAIN_BUDGET:
            try:
                size, ancdata, _flags, address = recvmsg_into(buffers, RECEIVE_ANCILLARY_SPACE)
            except BlockingIOError:
                break
            except OSError:  # a queued ICMP error on the socket; the next read goes on
                continue
            segment = segment_size(ancdata) if gro else 0
            if not 0 < segment < size:
                # One datagram: the cheapest checks (length, known session) before any copy or
                # timestamp, so garbage costs a read and a dict lookup.
                read += 1
                known = (
                    sessions.get(unpack_sid(buffer, SESSION_ID_OFFSET)[0])
                    if size >= MIN_DATAGRAM_SIZE
                    else None
                )
                if known is None:
                    too_short = size < MIN_DATAGRAM_SIZE
                    counts[DropReason.TOO_SHORT if too_short else DropReason.UNKNOWN_SESSION] += 1
                    continue
                pieces = [view[:size].tobytes()]
            else:  # a coalesced burst came from one address; its datagrams are split here
                known = None
                pieces = udp_offload.split_gro(view[:size].tobytes(), segment)
                read += len(pieces)
            at = stamp(ancdata, offset)
            for piece in pieces:
                session = known or sessions.get(peek_session_id(piece))
                if session is None:
                    too_short = len(piece) < MIN_DATAGRAM_SIZE
                    counts[DropReason.TOO_SHORT if too_short else DropReason.UNKNOWN_SESSION] += 1
                    continue
                if session is not current or address != current_address:
                    current, current_address = session, address
                    batch, arrivals = [], []
                    runs.append((session, address, ancdata, batch, arrivals))
                batch.append(piece)
                arrivals.append(at)
        if read >= DRAIN_BUDGET and len(runs) > 1:
            self._share(runs)
        for session, address, ancdata, batch, arrivals in runs:
            if batch:
                self._receive(session, address, ancdata, batch, arrivals, now)
        return read

    def _share(self, runs: list["_Run"]) -> None:
        """A full read with several sessions in it: each keeps at most an equal share of the
        budget, the rest of a heavier one's datagrams is dropped before any decryption, so one
        client flooding the socket cannot take the CPU the others' datagrams need."""
        totals: dict[int, int] = {}
        for session, _address, _ancdata, batch, _arrivals in runs:
            totals[session.session_id] = totals.get(session.session_id, 0) + len(batch)
        if len(totals) < 2:
            return
        share = max(DRAIN_BUDGET // len(totals), SESSION_SHARE_MIN)
        left = {sid: share for sid, total in totals.items() if total > share}
        dropped = 0
        for session, _address, _ancdata, batch, arrivals in runs:
            room = left.get(session.session_id)
            if room is None:
                continue
            if len(batch) > room:
                dropped += len(batch) - room
                del batch[room:], arrivals[room:]
            left[session.session_id] = room - len(batch)
        self.drops.counts[DropReason.SESSION_BUDGET] += dropped

    def _receive(  # noqa: PLR0917 - one batch of the drain loop, as it collected it
        self,
        session: ServerSession,
        address: Address,
        ancdata: list[tuple[int, int, bytes]],
        batch: list[bytes],
        arrivals: list[float | None],
        now: float,
    ) -> None:
        engine = session.engine
        ready = engine.receive(address, batch, now, arrivals)
        if address not in session.ancillary and engine.path(address) is not None:
            session.ancillary[address] = reply_ancillary(ancdata)
            path = engine.path(address)
            assert path is not None
            path.label = path_label(address)
        if ready:
            self._deliver(session, ready)
        self._flush(session)

    def _deliver(self, session: ServerSession, packets: list[bytes]) -> None:
        """Write the session's released packets whose inner source is its own address."""
        inner_v4, inner_v6 = session.inner_v4, session.inner_v6
        own = [
            packet
            for packet in packets
            if (packet[12:16] == inner_v4 if packet[0] >> 4 == 4 else packet[8:24] == inner_v6)
        ]
        if len(own) != len(packets):
            self.drops.counts[DropReason.SPOOFED_SOURCE] += len(packets) - len(own)
        if own:
            self.tun.write_all(own, session.csum_partial)  # in one go: a vnet TUN joins runs

    def on_tun_packets(self) -> None:
        """Drain the TUN: batch packets per destination session, hand each batch to its engine."""
        by_inner = self.by_inner
        counts = self.drops.counts
        batches: dict[int, list[bytes]] = {}
        for packet in self.tun_reader.read(DRAIN_BUDGET):
            version = packet[0] >> 4
            key = packet[16:20] if version == 4 else packet[24:40] if version == 6 else b""
            session = by_inner.get(key)
            if session is None:
                counts[DropReason.UNKNOWN_DESTINATION] += 1
                continue
            batch = batches.get(session.session_id)
            if batch is None:
                batches[session.session_id] = [packet]
            else:
                batch.append(packet)
        if not batches:
            return
        now = self._clock()
        for session_id, packets in batches.items():
            self.tun_packets_read += len(packets)
            session = self.sessions[session_id]
            self._send(session, session.engine.send(packets, now))
            self._timers.arm(session_id, session.engine.next_timer())

    def _on_timer(self, key: Hashable) -> None:
        session = self.sessions.get(key)  # type: ignore[call-overload]
        if session is None:
            return
        # First read what already arrived: a held packet's gap may be closed by a datagram that
        # is waiting in the socket, and the engine's deadlines count from kernel arrival times.
        for _ in range(TIMER_DRAIN_ROUNDS):
            if self.on_datagrams() < DRAIN_BUDGET:
                break  # drained
        ready = session.engine.on_timer(self._clock())
        if ready:
            self._deliver(session, ready)
        self._flush(session)

    def _flush(self, session: ServerSession) -> None:
        engine = session.engine
        self._send(session, engine.outgoing())
        for what, label in engine.take_events():
            if what in PATH_SET_EVENTS and self._on_paths_changed is not None:
                self._on_paths_changed()
            log.info(
                "session %08x (%s): path %s %s",
                session.session_id,
                session.identity,
                label,
                "back up" if what == "up" else what,
            )
        self._timers.arm(session.session_id, engine.next_timer())

    def _send(self, session: ServerSession, outgoing: dict[Address, list[bytes]]) -> None:
        send = self.sender.send
        ancillary = session.ancillary
        for address, datagrams in outgoing.items():
            send(datagrams, address, ancillary.get(address, []))

    # -- housekeeping (once a second) ----------------------------------------------------------

    def sweep(self) -> None:
        """Expire idle sessions; drop the reply data of paths the engines forgot."""
        now = self._clock()
        for session in list(self.sessions.values()):
            if now - session.engine.last_heard > SESSION_IDLE_S:
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
            engine = session.engine
            for address in [a for a in session.ancillary if engine.path(a) is None]:
                del session.ancillary[address]

    def snapshot(self) -> list[SessionSnapshot]:
        now = self._clock()
        return [
            SessionSnapshot(
                session_id=s.session_id,
                identity=s.identity,
                inner_v4=str(IPv4Address(s.inner_v4)),
                idle_s=round(now - s.engine.last_heard, 1),
                bond_v2=s.engine.v2,
                bond=s.engine.snapshot(now),
            )
            for s in self.sessions.values()
        ]
