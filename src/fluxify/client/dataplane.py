"""The client's data plane: TUN ⇄ the bond engine ⇄ one UDP socket per uplink, on one loop.

It moves bytes and makes no decisions: TUN reads go to ``engine.send`` in batches and the
per-path runs it returns go out of each uplink's socket; the sockets are drained into
``engine.receive`` (on a short timer while datagrams stream in small batches:
``read_moderation``) and what comes back is written to the TUN; one timer runs the engine's
deadlines (heartbeats, feedback, reorder holds, liveness). Scheduling, reordering, liveness and
rates live in ``protocol.bond``.
"""

import asyncio
import logging
import socket
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import partial

from fluxify.linux import rx_timestamps, tun_offload, udp_offload
from fluxify.linux.engine_timer import EngineTimers
from fluxify.linux.read_moderation import ModeratedReaders
from fluxify.linux.tun_offload import TunReader
from fluxify.linux.udp_offload import UdpSender
from fluxify.protocol.bond import BondEngine, BondSnapshot
from fluxify.protocol.drops import DropReason

log = logging.getLogger(__name__)

DRAIN_BUDGET = 256  # datagrams or TUN packets per wake-up, for fairness between fds
TIMER_DRAIN_ROUNDS = 8  # before deadlines run, read up to 8 x DRAIN_BUDGET waiting datagrams
RECEIVE_BUFFER_BYTES = 2048
RECEIVE_ANCILLARY_SPACE = rx_timestamps.TIMESTAMP_SPACE + udp_offload.GRO_SPACE


# one socket read: arrival stamp (for ordering), uplink, its datagrams, their stamps
_Chunk = tuple[float, int, list[bytes], list[float | None]]
_INF = float("inf")


def _chunk_arrival(chunk: _Chunk) -> float:
    return chunk[0]


@dataclass(frozen=True)
class Uplink:
    """One uplink: its label (interface name) and its bound UDP socket."""

    label: str
    sock: socket.socket


@dataclass(frozen=True)
class Tunnel:
    """What the control plane handed out, as the data plane needs it."""

    engine: BondEngine[int]
    server: tuple[str, int]
    inner_v4: bytes
    inner_v6: bytes
    csum_partial: bool = False  # feature csum-partial: TCP checksums may stay partial both ways


class ClientDataPlane:
    """Owns the TUN and uplink readers of a bonding client. Not thread-safe: one event loop.

    Path ``i`` of the engine is ``uplinks[i]``."""

    def __init__(self, tun_fd: int, uplinks: Sequence[Uplink], tunnel: Tunnel) -> None:
        self.tun_fd = tun_fd
        self.uplinks = list(uplinks)
        self.tunnel = tunnel
        self.drops = tunnel.engine.codec.drops
        self.tun = tun_offload.tun_writer(tun_fd, self.drops)
        self.tun_reader = TunReader(tun_fd, self.drops)
        self.tun_reader.partial_for = tun_offload.any_destination if tunnel.csum_partial else None
        tso, uso = tun_offload.enable_offloads(tun_fd) if self.tun_reader.vnet else (False, False)
        self.tun_packets_read = 0
        self._timers = EngineTimers(self._on_timer)
        self._loop: asyncio.AbstractEventLoop | None = None
        counts = self.drops.counts
        self.senders = [
            UdpSender(u.sock, counts, gso=udp_offload.gso_supported(u.sock)) for u in self.uplinks
        ]
        gro = [udp_offload.enable_gro(u.sock) for u in self.uplinks]
        self.gro = any(gro)  # a coalesced read needs the large buffer; it is split by its cmsg
        size = udp_offload.GRO_BUFFER_BYTES if self.gro else RECEIVE_BUFFER_BYTES
        self._rx_buffer = bytearray(size)
        self._rx_view = memoryview(self._rx_buffer)
        # every read drains all uplinks (in arrival order), so one reader serves their sockets
        self.socket_reader = ModeratedReaders(
            [u.sock.fileno() for u in self.uplinks], partial(self.on_datagrams, 0)
        )
        log.info(
            "data plane offloads: UDP GSO %s, UDP GRO %s, TUN TSO %s, TUN USO %s, "
            "partial TCP checksums %s",
            "on" if all(s.gso for s in self.senders) else "off",
            "on" if all(gro) else "off",
            "on" if tso else "off",
            "on" if uso else "off",
            "on" if tunnel.csum_partial else "off",
        )

    @property
    def engine(self) -> BondEngine[int]:
        return self.tunnel.engine

    def use_tunnel(self, tunnel: Tunnel) -> None:
        """Switch to a new session (the old one was lost) and greet the server on every path."""
        self.tun.write_all(self.engine.reorder.flush(), self.tunnel.csum_partial)
        tunnel.engine.codec.drops = self.drops
        self.tunnel = tunnel
        self.tun_reader.partial_for = tun_offload.any_destination if tunnel.csum_partial else None
        now = self._now()
        self.engine.send_handshakes(now)
        self._flush()

    # -- event loop --------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.tun_fd, self.on_tun_packets)
        self.socket_reader.attach(loop)
        self._timers.attach(loop)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self.tun_fd)
        self.socket_reader.detach()
        self._timers.detach()
        self._loop = None

    def send_handshakes(self) -> None:
        now = self._now()
        self.engine.send_handshakes(now)
        self._flush()

    def on_tun_packets(self) -> None:
        tunnel = self.tunnel
        inner_v4, inner_v6 = tunnel.inner_v4, tunnel.inner_v6
        counts = self.drops.counts
        batch: list[bytes] = []
        for packet in self.tun_reader.read(DRAIN_BUDGET):
            version = packet[0] >> 4
            if version == 4:
                ours = packet[12:16] == inner_v4
            else:
                ours = version == 6 and packet[8:24] == inner_v6
            if not ours:  # link-local chatter of the TUN itself; the server would drop it
                counts[DropReason.NOT_TUNNELED] += 1
                continue
            batch.append(packet)
        if not batch:
            return
        self.tun_packets_read += len(batch)
        now = self._now()
        self._transmit(tunnel.engine.send(batch, now))
        self._timers.arm(0, tunnel.engine.next_timer())

    def on_datagrams(self, index: int) -> int:
        """Drain uplink ``index``'s socket into the engine; returns how many datagrams were read.

        With several uplinks the others are read too and everything is handed to the engine in
        the kernel's arrival order, one read (a GRO burst) at a time: the server sends runs of
        packets per path, and a socket read while its sibling waits would give the engine the
        later runs first, to be held for the earlier ones."""
        # One clock offset for every socket of this call: two readings can differ by however long
        # this process was preempted between time.time() and time.monotonic(), more than the
        # microseconds between two runs of datagrams, which would misorder them.
        offset = rx_timestamps.wall_minus_monotonic()
        chunks = self._read(index, offset)
        if len(self.uplinks) > 1:
            for other in range(len(self.uplinks)):
                if other != index:
                    chunks += self._read(other, offset)
            chunks.sort(key=_chunk_arrival)
        if not chunks:
            return 0
        now = self._now()
        engine = self.engine
        ready: list[bytes] = []
        count = 0
        start = 0
        while start < len(chunks):  # consecutive reads of one uplink go in as one batch
            key = chunks[start][1]
            end = start + 1
            while end < len(chunks) and chunks[end][1] == key:
                end += 1
            batch: list[bytes] = []
            arrivals: list[float | None] = []
            for _at, _key, datagrams, stamps in chunks[start:end]:
                batch += datagrams
                arrivals += stamps
            count += len(batch)
            ready += engine.receive(key, batch, now, arrivals)
            start = end
        if ready:
            self.tun.write_all(ready, self.tunnel.csum_partial)
        self._flush()
        return count

    def _read(self, index: int, offset: float) -> list[_Chunk]:
        """Up to ``DRAIN_BUDGET`` datagrams waiting in uplink ``index``'s socket, per read."""
        recvmsg_into = self.uplinks[index].sock.recvmsg_into
        buffers = [self._rx_buffer]
        view = self._rx_view
        gro = self.gro
        server = self.tunnel.server
        counts = self.drops.counts
        stamp = rx_timestamps.arrival
        segment_size = udp_offload.gro_segment_size
        chunks: list[_Chunk] = []
        read = 0
        while read < DRAIN_BUDGET:
            try:
                size, ancdata, _flags, address = recvmsg_into(buffers, RECEIVE_ANCILLARY_SPACE)
            except BlockingIOError:
                break
            except OSError:  # e.g. ECONNREFUSED from an ICMP error; keep reading
                continue
            if address[0] != server[0] or address[1] != server[1]:
                # only the server speaks to us; a coalesced read counts each of its datagrams
                segment = segment_size(ancdata) if gro else 0
                counts[DropReason.FOREIGN_SOURCE] += (
                    -(-size // segment) if 0 < segment < size else 1
                )
                continue
            data = view[:size].tobytes()
            at = stamp(ancdata, offset)
            segment = segment_size(ancdata) if gro else 0
            if 0 < segment < size:  # a coalesced burst, all from the server's address
                datagrams = [data[start : start + segment] for start in range(0, size, segment)]
            else:
                datagrams = [data]
            read += len(datagrams)
            chunks.append((_INF if at is None else at, index, datagrams, [at] * len(datagrams)))
        return chunks

    def _on_timer(self, _key: Hashable) -> None:
        # First read what already arrived: a held packet's gap may be closed by a datagram that
        # is waiting in a socket, and the engine's deadlines count from kernel arrival times.
        for _ in range(TIMER_DRAIN_ROUNDS):  # each round reads every uplink
            if self.on_datagrams(0) < DRAIN_BUDGET:
                break  # drained
        now = self._now()
        ready = self.engine.on_timer(now)
        if ready:
            self.tun.write_all(ready, self.tunnel.csum_partial)
        self._flush()

    def _flush(self) -> None:
        engine = self.engine
        self._transmit(engine.outgoing())
        for what, label in engine.take_events():
            log.warning("uplink %s is %s", label, "back up" if what == "up" else what)
        self._timers.arm(0, engine.next_timer())

    def _transmit(self, outgoing: dict[int, list[bytes]]) -> None:
        server = self.tunnel.server
        senders = self.senders
        for key, datagrams in outgoing.items():
            senders[key].send(datagrams, server, [])

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    # -- views ---------------------------------------------------------------------------------

    @property
    def all_dead(self) -> bool:
        return self.engine.all_dead

    def moved_data(self) -> int:
        """IP packets through the tunnel so far (read from the TUN plus written to it)."""
        return self.tun_packets_read + self.tun.written

    def snapshot(self) -> BondSnapshot:
        return self.engine.snapshot(self._now())
