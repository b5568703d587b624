"""A terrible fake network for two bond engines: N paths with rate, delay, jitter, loss, a
bottleneck queue and outages, on a virtual clock with a seeded ``random.Random`` (trio's
``test_handshake_over_terrible_network`` is the model). A failure replays exactly.

Each path has a link per direction: a datagram waits behind the ones before it (serialisation at
``rate_bps``), is dropped when it would wait longer than ``queue_limit_s`` (a token-bucket
shaper's latency) or by ``loss``, and arrives ``delay_s`` (+ jitter, never reordering unless
``reorder`` says so) later. While a path is ``down`` nothing crosses it in either direction.
"""

import heapq
import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from fluxify.protocol.bond import BondConfig, BondEngine, Role
from fluxify.protocol.bondpath import Priority
from fluxify.protocol.session import DataSession

KEY = bytes(range(32))
SESSION_ID = 0x0A0B0C0D
CLIENT_V4 = bytes([10, 8, 0, 2])
SERVER_V4 = bytes([10, 8, 0, 1])
WIRE_OVERHEAD = 28  # IP + UDP around each datagram
_FILLER = random.Random(0).randbytes(1500)  # incompressible: gzip must not shrink test traffic


@dataclass
class LinkModel:
    rate_mbit: float = 50.0
    delay_ms: float = 10.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    queue_limit_ms: float = 50.0
    reorder: float = 0.0  # probability that a datagram skips the FIFO order (jitter allowed)
    priority: Priority = Priority.PRIMARY


@dataclass
class Link:
    """One direction of one path."""

    model: LinkModel
    rng: random.Random
    busy_until: float = 0.0
    last_arrival: float = 0.0
    delivered: int = 0
    dropped: int = 0
    delivered_bytes: int = 0

    def transmit(self, now: float, size: int) -> float | None:
        """Arrival time of a datagram of ``size`` bytes sent at ``now``, or None if dropped."""
        m = self.model
        rate = m.rate_mbit * 1e6 / 8
        start = max(now, self.busy_until)
        if start - now > m.queue_limit_ms / 1000:
            self.dropped += 1
            return None
        self.busy_until = start + (size + WIRE_OVERHEAD) / rate
        if self.rng.random() < m.loss:
            self.dropped += 1
            return None
        arrival = self.busy_until + m.delay_ms / 1000
        if m.jitter_ms:
            arrival += self.rng.uniform(0, m.jitter_ms / 1000)
        if self.rng.random() >= m.reorder:
            arrival = max(arrival, self.last_arrival)  # FIFO: jitter never reorders
        self.last_arrival = max(self.last_arrival, arrival)
        self.delivered += 1
        self.delivered_bytes += size
        return arrival


def udp_packet(number: int, size: int = 1200, flow: int = 0, *, down: bool = False) -> bytes:
    """An IPv4/UDP packet from the client's inner address (or to it when ``down``) whose payload
    starts with its flow and number, so the receiver can check order and exactly-once."""
    payload = struct.pack(">II", flow, number) + _FILLER[: max(0, size - 36)]
    total = 28 + len(payload)
    src, dst = (SERVER_V4, CLIENT_V4) if down else (CLIENT_V4, SERVER_V4)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0, src, dst)
    udp = struct.pack(">HHHH", 5000 + flow, 6000, 8 + len(payload), 0)
    return ip + udp + payload


def packet_number(packet: bytes) -> tuple[int, int]:
    flow, number = struct.unpack_from(">II", packet, 28)
    return flow, number


@dataclass(order=True)
class _Event:
    when: float
    order: int
    kind: str = field(compare=False)
    side: str = field(compare=False)
    key: object = field(compare=False)
    datagram: bytes = field(compare=False, default=b"")


class Network:
    """Two engines and the paths between them. ``client_keys[i]`` / ``server_keys[i]`` name
    path i at each end (the server learns its keys from where datagrams come from)."""

    def __init__(self, models: list[LinkModel], *, seed: int = 1, v2: bool = True) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.models = models
        self.up = [Link(m, self.rng) for m in models]
        self.down = [Link(m, self.rng) for m in models]
        self.cut = [False] * len(models)
        self.client = BondEngine(
            DataSession(SESSION_ID, KEY, numbered_control=v2), BondConfig(Role.CLIENT, v2), 0.0
        )
        self.server = BondEngine(
            DataSession(SESSION_ID, KEY, numbered_control=v2), BondConfig(Role.SERVER, v2), 0.0
        )
        self.server_keys = [("192.0.2.1", 40000 + i) for i in range(len(models))]
        for i, m in enumerate(models):
            self.client.add_path(i, f"wan{i + 1}", 0.0, m.priority)
        self._events: list[_Event] = []
        self._order = 0
        self.delivered: dict[str, list[bytes]] = {"client": [], "server": []}
        # datagrams each side handed to each path, by (side, path index, packet type), counted
        # before the link decides their fate (cut, queue overflow, loss)
        self.tally: Counter[tuple[str, int, int]] = Counter()
        self.client.send_handshakes(0.0)
        self._flush("client")

    # -- plumbing -------------------------------------------------------------------------

    def _push(self, when: float, kind: str, side: str, key: object, datagram: bytes = b"") -> None:
        self._order += 1
        heapq.heappush(self._events, _Event(when, self._order, kind, side, key, datagram))

    def _flush(self, side: str) -> None:
        engine = self.client if side == "client" else self.server
        for key, datagrams in engine.outgoing().items():
            self._transmit(side, key, datagrams)

    def _transmit(self, side: str, key: object, datagrams: list[bytes]) -> None:
        if side == "client":
            index = int(key)  # type: ignore[call-overload]
            link, dest, dest_key = self.up[index], "server", self.server_keys[index]
        else:
            index = self.server_keys.index(key)  # type: ignore[arg-type]
            link, dest, dest_key = self.down[index], "client", index
        tally = self.tally
        for datagram in datagrams:
            tally[side, index, datagram[1]] += 1
            if self.cut[index]:
                link.dropped += 1
                continue
            arrival = link.transmit(self.now, len(datagram))
            if arrival is not None:
                self._push(arrival, "arrive", dest, dest_key, datagram)

    def _arm(self, side: str) -> None:
        engine = self.client if side == "client" else self.server
        deadline = engine.next_timer()
        if deadline is not None:
            self._push(max(deadline, self.now), "timer", side, None)

    # -- driving --------------------------------------------------------------------------

    def send(self, side: str, packets: list[bytes]) -> None:
        engine = self.client if side == "client" else self.server
        for key, datagrams in engine.send(packets, self.now).items():
            self._transmit(side, key, datagrams)
        self._arm(side)

    def run_until(self, end: float, source: Callable[[float], None] | None = None) -> None:
        """Process events until ``end``; ``source(now)`` is called every millisecond."""
        tick = self.now
        self._arm("client")
        self._arm("server")
        while True:
            next_event = self._events[0].when if self._events else end
            if source is not None and tick <= min(next_event, end):
                self.now = tick
                source(tick)
                tick += 0.001
                continue
            if not self._events or self._events[0].when > end:
                self.now = end
                return
            event = heapq.heappop(self._events)
            self.now = event.when
            engine = self.client if event.side == "client" else self.server
            if event.kind == "arrive":
                ready = engine.receive(event.key, [event.datagram], self.now)
            else:
                if engine.next_timer() is None or engine.next_timer() > self.now:  # type: ignore[operator]
                    continue  # a stale timer event: a newer one is armed
                ready = engine.on_timer(self.now)
            self.delivered[event.side] += ready
            self._flush(event.side)
            self._arm(event.side)

    def set_cut(self, index: int, cut: bool) -> None:
        self.cut[index] = cut

    def sent_on(self, side: str, index: int, packet_type: int) -> int:
        """Datagrams of ``packet_type`` that ``side`` handed to path ``index`` so far."""
        return self.tally[side, index, packet_type]


class Cbr:
    """A constant-bit-rate source for :meth:`Network.run_until`: ``rate_mbit`` of inner packets
    of ``size`` bytes from ``side``, numbered 0, 1, … and spread round robin over ``flows``.
    Packets from the server are addressed to the client (``udp_packet(down=True)``)."""

    def __init__(
        self,
        net: Network,
        rate_mbit: float,
        *,
        side: str = "client",
        size: int = 1200,
        flows: int = 1,
    ) -> None:
        self.net = net
        self.side = side
        self.size = size
        self.flows = flows
        self.per_ms = rate_mbit * 1e6 / 8 / 1000 / size
        self.credit = 0.0
        self.sent = 0
        self.paused = False

    def __call__(self, now: float) -> None:
        if self.paused:
            return
        self.credit += self.per_ms
        count = int(self.credit)
        if not count:
            return
        self.credit -= count
        down = self.side == "server"
        first, self.sent = self.sent, self.sent + count
        packets = [
            udp_packet(n, self.size, n % self.flows, down=down) for n in range(first, self.sent)
        ]
        self.net.send(self.side, packets)
