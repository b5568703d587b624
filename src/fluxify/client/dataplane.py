"""The client's data plane: TUN ⇄ one UDP socket per uplink ⇄ the server, on event-loop readers.

Uplink: each TUN packet from our inner address is sealed once and sent on the next uplink of
a weighted round-robin over alive uplinks (weights shrink on paths whose queue builds up).
Downlink: each uplink socket is drained, datagrams opened, IP packets written to the TUN,
heartbeat echoes turned into round-trip samples. A path is alive while it hears from the server
within ``dead_after_s``; heartbeats go on every path, dead or alive, so a
path that recovers is revived by its first echo.
"""

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fluxify.linux.tun_writer import InOrderTunWriter
from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.header import HeartbeatFlag, PacketType
from fluxify.protocol.heartbeat import round_trip_ns, unpack_received_bytes
from fluxify.protocol.paths import PathSnapshot, PathState
from fluxify.protocol.pathweights import PathWeights, normalize
from fluxify.protocol.reorder import ReorderBuffer
from fluxify.protocol.scheduler import RoundRobin
from fluxify.protocol.session import DataSession

log = logging.getLogger(__name__)

DRAIN_BUDGET = 256
RECEIVE_BUFFER_BYTES = 2048
TUN_READ_BYTES = 65536

_IP = int(PacketType.IP)
_HEARTBEAT = int(PacketType.HEARTBEAT)
_PROBE = int(HeartbeatFlag.PROBE)
REORDER_SPREAD_FACTOR = 1.5  # hold out-of-order packets 1.5x the paths' RTT spread, plus margin
REORDER_MARGIN_S = 0.015
MIN_REORDER_HOLD_S = 0.020
MAX_REORDER_HOLD_S = 0.200
SINGLE_PATH_REORDER_HOLD_S = 0.003  # one path carries data: only path switches reorder
DATA_PATH_MIN_PACKETS = 20  # a path "carries data" with more than this many packets per check
REORDER_TUNE_INTERVAL_S = 0.25  # the check runs at most this often, whatever the heartbeat pace


class Uplink(PathState):
    """One uplink: its interface name and its bound UDP socket."""

    __slots__ = ("ifname", "revived_ns", "sock")

    def __init__(self, ifname: str, sock: socket.socket, now: float) -> None:
        super().__init__(ifname, now)
        self.ifname = ifname
        self.sock = sock
        self.revived_ns = 0  # wall clock of the last revival: older heartbeats say nothing now


@dataclass(frozen=True)
class Tunnel:
    """What the control plane handed out and the data plane needs."""

    codec: DataSession
    server: tuple[str, int]
    inner_v4: bytes
    inner_v6: bytes
    probing: bool = False  # path-probe negotiated: echo probes, reorder the downlink
    rate_report: bool = False  # rate-report negotiated: counters in heartbeats and probes


class ClientDataPlane:
    """Owns the TUN and uplink readers of a bonding client. Not thread-safe: one event loop."""

    def __init__(
        self,
        tun_fd: int,
        uplinks: Sequence[Uplink],
        tunnel: Tunnel,
        *,
        dead_after_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.tun_fd = tun_fd
        self.uplinks = list(uplinks)
        self.tunnel = tunnel
        self.dead_after_s = dead_after_s
        self.drops = DropCounters()
        self.weights = PathWeights()
        self.scheduler: RoundRobin[Uplink] = RoundRobin()
        self.scheduler.refresh(self.uplinks)
        self._clock = clock
        self._wall_clock_ns = wall_clock_ns
        self.tun_packets_read = 0
        self.tun = InOrderTunWriter(tun_fd, self.drops, clock)
        self.reorder = ReorderBuffer()
        self._rx_seen: dict[str, int] = {}
        self._tuned_at = float("-inf")
        self._packets_seen = 0  # TUN packets read and written at the last moved_data()

    def use_tunnel(self, tunnel: Tunnel) -> None:
        """Switch to a new session (after the old one was lost) and greet the server again."""
        self.tunnel = tunnel
        self.tun.flush(self.reorder)
        self.reorder = ReorderBuffer(self.reorder.hold_s)  # the new session numbers from 1
        now = self._clock()
        for uplink in self.uplinks:
            uplink.last_rx_s = now  # a fresh grace period: the new session has not spoken yet
        self.check_liveness()
        self.send_handshakes()

    # -- event loop --------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tun.attach(loop)
        loop.add_reader(self.tun_fd, self.on_tun_packets)
        for uplink in self.uplinks:
            loop.add_reader(uplink.sock.fileno(), self.on_datagrams, uplink)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self.tun_fd)
        for uplink in self.uplinks:
            loop.remove_reader(uplink.sock.fileno())
        self.tun.detach()

    def on_tun_packets(self) -> None:
        read = os.read
        fd = self.tun_fd
        tunnel = self.tunnel
        seal = tunnel.codec.seal_ip
        server = tunnel.server
        pick = self.scheduler.pick
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
            if version == 4:
                ours = packet[12:16] == tunnel.inner_v4
            else:
                ours = version == 6 and packet[8:24] == tunnel.inner_v6
            if not ours:  # link-local chatter of the TUN itself; the server would drop it
                counts[DropReason.NOT_TUNNELED] += 1
                continue
            uplink = pick()
            if uplink is None:
                counts[DropReason.NO_PATH] += 1
                continue
            datagram = seal(packet)
            if datagram is None:
                continue
            try:
                uplink.sock.sendto(datagram, server)
            except BlockingIOError:
                counts[DropReason.QUEUE_FULL] += 1
            except OSError:
                counts[DropReason.SEND_FAILED] += 1
            else:
                uplink.tx_packets += 1
                uplink.tx_bytes += len(datagram)

    def on_datagrams(self, uplink: Uplink) -> None:
        recv = uplink.sock.recvfrom
        codec = self.tunnel.codec
        now = self._clock()
        for _ in range(DRAIN_BUDGET):
            try:
                data, _address = recv(RECEIVE_BUFFER_BYTES)
            except BlockingIOError:
                return
            except OSError:  # e.g. ECONNREFUSED from an ICMP error; keep reading
                continue
            opened = codec.open(data)
            if opened is None:
                continue
            uplink.rx_packets += 1
            uplink.rx_bytes += len(data)
            uplink.last_rx_s = now
            ptype, payload = opened
            if ptype == _IP:
                if self.tunnel.probing:
                    self.tun.deliver(self.reorder, codec.received_seq, payload, now)
                else:
                    self.tun.write(payload)
            elif ptype == _HEARTBEAT:
                if codec.received_flags & _PROBE:
                    self._send_control(uplink, codec.seal_probe_echo(payload))
                    if self.tunnel.rate_report:
                        self._server_received(uplink, payload, now)
                    continue
                now_ns = self._wall_clock_ns()
                rtt_ns = round_trip_ns(payload, now_ns)
                # Heartbeats sent while the path was down come back late, all at once, when it
                # returns: as delay samples they would make it look congested for seconds.
                if rtt_ns is not None and now_ns - rtt_ns >= uplink.revived_ns:
                    uplink.add_delay_sample(rtt_ns / 1e9)
                    if self.weights.on_sample(uplink, rtt_ns / 1e9, now):
                        normalize(self.uplinks)
                        self.scheduler.refresh(self.uplinks)
                if not uplink.alive:
                    self.check_liveness()

    def _server_received(self, uplink: Uplink, probe_payload: bytes, now: float) -> None:
        """A probe's counter: what the server received on this uplink; re-divide by rates."""
        received = unpack_received_bytes(probe_payload)
        if received is not None and self.weights.on_report(uplink, received, self.uplinks, now):
            self.scheduler.refresh(self.uplinks)

    # -- timers (per second, not per packet) --------------------------------------------------

    def send_heartbeats(self) -> None:
        """One heartbeat on every uplink, alive or not: an echo is how a dead path revives."""
        report = self.tunnel.rate_report
        for uplink in self.uplinks:
            received = uplink.rx_bytes if report else None
            heartbeat = self.tunnel.codec.seal_heartbeat(self._wall_clock_ns(), received)
            self._send_control(uplink, heartbeat)

    def send_handshakes(self) -> None:
        for uplink in self.uplinks:
            self._send_control(uplink, self.tunnel.codec.seal_handshake())

    def _send_control(self, uplink: Uplink, datagram: bytes) -> None:
        try:
            uplink.sock.sendto(datagram, self.tunnel.server)
        except OSError:
            self.drops.counts[DropReason.SEND_FAILED] += 1

    def check_liveness(self) -> None:
        """Mark paths dead or alive by how long they have been silent; log the changes."""
        now = self._clock()
        changed = False
        for uplink in self.uplinks:
            alive = now - uplink.last_rx_s <= self.dead_after_s
            if alive != uplink.alive:
                uplink.alive = alive
                changed = True
                if alive:  # a revived path starts afresh: its old queue history is void
                    uplink.weight = 1.0
                    uplink.delay_s = None
                    uplink.revived_ns = self._wall_clock_ns()
                    self.weights.forget(uplink)
                log.warning("uplink %s is %s", uplink.ifname, "back up" if alive else "down")
        if changed:
            self.scheduler.refresh(self.uplinks)
        if now - self._tuned_at >= REORDER_TUNE_INTERVAL_S:
            self._tuned_at = now
            self._tune_reorder_hold()

    def _tune_reorder_hold(self) -> None:
        """Hold out-of-order packets about as long as the carrying paths' delays differ.

        Only paths that brought data since the last call count: when the server sends on one
        path (v1, or paths too far apart in delay), a gap is a loss, and holding it would only
        delay TCP's retransmission (measured: 36 instead of 47 Mbit/s).
        """
        carrying = [
            u
            for u in self.uplinks
            if u.alive and u.rx_packets - self._rx_seen.get(u.label, 0) > DATA_PATH_MIN_PACKETS
        ]
        self._rx_seen = {u.label: u.rx_packets for u in self.uplinks}
        delays = [u.delay_s for u in carrying if u.delay_s is not None]
        if len(carrying) < 2:
            self.reorder.hold_s = SINGLE_PATH_REORDER_HOLD_S
            return
        spread = max(delays) - min(delays) if len(delays) > 1 else 0.0
        self.reorder.hold_s = min(
            max(REORDER_SPREAD_FACTOR * spread + REORDER_MARGIN_S, MIN_REORDER_HOLD_S),
            MAX_REORDER_HOLD_S,
        )

    def moved_data(self) -> bool:
        """Whether IP packets went through the tunnel since the last call."""
        packets = self.tun_packets_read + self.tun.written
        moved = packets != self._packets_seen
        self._packets_seen = packets
        return moved

    @property
    def all_dead(self) -> bool:
        return self.scheduler.usable == 0

    def snapshot(self) -> list[PathSnapshot]:
        now = self._clock()
        return [uplink.snapshot(now) for uplink in self.uplinks]
