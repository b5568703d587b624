"""Datagram fuzzing (issue 13): generated datagrams through the server's and the client's real
receive paths — ``ServerDataPlane.on_datagrams`` and ``ClientDataPlane.on_datagrams``, the bond
engine and the codec behind them — over real loopback UDP sockets, so GRO super-packets arrive
as the kernel builds them from GSO sends.

Inputs: random bytes, valid datagrams of every type under both header versions (v1 and the
bond-v2 path fields), valid-tag datagrams with crafted fields (types, compression, seq 0, gzip
bombs, empty and non-IP payloads), valid-session bad-tag, mutations, truncations, replays (from
the same and from other addresses), another session's key, super-packets and oversize buffers.

Every datagram read must end accepted by a codec or dropped with one reason; a raise is a crash.
Run the full command with ``bash scripts/fuzz-datagrams`` (10^6 datagrams per side by default);
the test suite runs a short one.
"""

import argparse
import asyncio
import contextlib
import os
import random
import socket
import struct
import sys
import time
import traceback
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from fluxify.client.dataplane import ClientDataPlane, Tunnel, Uplink
from fluxify.linux.udp_offload import SOL_UDP, UDP_SEGMENT
from fluxify.protocol.bond import BondConfig, BondEngine, Role
from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.feedback import FeedbackEntry, pack_feedback
from fluxify.protocol.header import HeaderFlag, PacketType
from fluxify.protocol.heartbeat import pack_heartbeat
from fluxify.protocol.seal import Sealer
from fluxify.protocol.session import DataSession
from fluxify.server.dataplane import ServerDataPlane
from fluxify.server.udp_socket import open_data_socket

# Counted for a datagram a codec accepted (a second look at what it carried), or on sending.
POST_ACCEPT = frozenset(
    {DropReason.STALE_HEARTBEAT, DropReason.MALFORMED_CONTROL, DropReason.SPOOFED_SOURCE}
)
SEND_SIDE = frozenset(
    {
        DropReason.NO_PATH,
        DropReason.QUEUE_FULL,
        DropReason.UNKNOWN_DESTINATION,
        DropReason.SEND_FAILED,
        DropReason.NOT_TUNNELED,
    }
)
DRAIN_EVERY = 96  # datagrams sent before the data plane reads them (well inside the buffer)
VIRTUAL_STEP_S = 0.002  # the server's clock advances this much per read
MAX_GSO_SEGMENTS = 64
SO_RCVBUFFORCE = 33
UPLINK_BUFFER_BYTES = 4 * 1024 * 1024  # as the data planes size theirs: nothing lost here
STRANGERS = 20  # server side: addresses beyond MAX_PATHS, so the path limit is reached
SERVER_V4 = b"\x0a\x08\x00\x01"
_IP = int(PacketType.IP)
_HEARTBEAT = int(PacketType.HEARTBEAT)
_HANDSHAKE = int(PacketType.HANDSHAKE)
_FEEDBACK = int(PacketType.FEEDBACK)
_FIELDS = int(HeaderFlag.PATH_FIELDS)
_ECHO = int(HeaderFlag.ECHO)


@dataclass
class FuzzReport:
    """What one side saw: inputs by kind, drops by reason, accepted, read; the first crashes."""

    side: str
    kinds: Counter[str] = field(default_factory=Counter)
    drops: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    read: int = 0
    accepted: int = 0
    unaccounted: int = 0
    crash_count: int = 0
    crashes: list[str] = field(default_factory=list)

    def crash(self, recent: list[str]) -> None:
        self.crash_count += 1
        if len(self.crashes) < 5:
            self.crashes.append(f"after {recent[-8:]}:\n{traceback.format_exc()}")

    def lines(self) -> list[str]:
        out = [f"{self.side}: {self.sent} datagrams sent, {self.read} read"]
        out += [f"  input: {name:<36} {n:>9}" for name, n in sorted(self.kinds.items())]
        out.append(f"  {'accepted by a codec':<43} {self.accepted:>9}")
        out += [f"  drop: {name:<37} {n:>9}" for name, n in sorted(self.drops.items())]
        out.append(f"  {'read, neither accepted nor counted':<43} {self.unaccounted:>9}")
        out.append(f"  {'crashes':<43} {self.crash_count:>9}")
        return out


@contextlib.contextmanager
def counting_opens() -> Iterator[list[int]]:
    """Counts the datagrams any ``DataSession.open`` accepted (the harness's only hook)."""
    real = DataSession.open
    accepted = [0]

    def open_counted(self: DataSession, datagram: bytes) -> tuple[int, bytes] | None:
        opened = real(self, datagram)
        if opened is not None:
            accepted[0] += 1
        return opened

    DataSession.open = open_counted  # type: ignore[method-assign]
    try:
        yield accepted
    finally:
        DataSession.open = real  # type: ignore[method-assign]


def account(report: FuzzReport, drops: DropCounters, accepted: int) -> None:
    report.accepted = accepted
    report.drops = drops.snapshot()
    pre_accept = sum(
        drops.counts[r] for r in DropReason if r not in POST_ACCEPT and r not in SEND_SIDE
    )
    report.unaccounted = report.read - accepted - pre_accept


# --- generation --------------------------------------------------------------------------------


def ipv4_packet(rng: random.Random, src: bytes, dst: bytes, size: int) -> bytes:
    proto = rng.choice([6, 17, 1])
    header = struct.pack(">BBHHHBBH", 0x45, 0, size, rng.randrange(65536), 0, 64, proto, 0)
    return header + src + dst + rng.randbytes(size - 20)


def ipv6_packet(rng: random.Random, src: bytes, dst: bytes, size: int) -> bytes:
    header = struct.pack(">IHBB", 6 << 28, size - 40, rng.choice([6, 17, 58]), 64) + src + dst
    return header + rng.randbytes(size - 40)


@dataclass
class Peer:
    """The far end of one session: its codec (as that end numbers and seals) and raw sealer."""

    session_id: int
    key: bytes
    v2: bool
    inner_v4: bytes  # the source of IP packets to a server, the destination from one
    inner_v6: bytes
    codec: DataSession = field(init=False)
    sealer: Sealer = field(init=False)
    path_seq: list[int] = field(default_factory=lambda: [0] * 4)

    def __post_init__(self) -> None:
        self.codec = DataSession(self.session_id, self.key, numbered_control=self.v2)
        self.sealer = Sealer(self.key, self.session_id)


class Generator:
    """Seeded structured datagrams for ``peers``; ``to_server`` picks the direction's fields.

    ``wall_ns()`` and ``now_us()`` are the receiving side's clocks (v1 stamps, v2 send times).
    """

    def __init__(
        self,
        rng: random.Random,
        peers: list[Peer],
        *,
        to_server: bool,
        wall_ns: Callable[[], int],
        now_us: Callable[[], int],
    ) -> None:
        self.rng = rng
        self.peers = peers
        self.to_server = to_server
        self.wall_ns = wall_ns
        self.now_us = now_us
        self.valid: deque[bytes] = deque(maxlen=1024)  # for replays and mutations
        self.kinds: list[tuple[str, Callable[[Peer], list[bytes]], int]] = [
            ("valid ip", self._valid_ip, 22),
            ("valid control", self._valid_control, 10),
            ("crafted valid-tag", self._crafted, 10),
            ("bad tag", self._bad_tag, 12),
            ("mutated", self._mutated, 10),
            ("truncated or extended", self._truncated, 6),
            ("replay", self._replay, 10),
            ("random bytes", self._random, 8),
            ("random after a header", self._random_after_header, 5),
            ("other session's key", self._other_key, 2),
            ("super-packet", self._super_packet, 4),
            ("garbage super-packet", self._garbage_super, 2),
            ("oversize", self._oversize, 1),
        ]
        self._weights = [w for _n, _f, w in self.kinds]

    def next(self) -> tuple[str, Peer, list[bytes]]:
        name, make, _w = self.rng.choices(self.kinds, self._weights)[0]
        peer = self.rng.choice(self.peers)
        return name, peer, make(peer)

    # valid ------------------------------------------------------------------------------------

    def _fields(self, peer: Peer) -> tuple[int, int, int]:
        """bond-v2 path fields (flags, path word, send µs), or zeros for a v1 header."""
        if not peer.v2 or self.rng.random() < 0.05:
            return 0, 0, 0
        path_id = self.rng.randrange(len(peer.path_seq))
        peer.path_seq[path_id] += 1
        flags = _FIELDS | (self.rng.random() < 0.1) * int(HeaderFlag.BACKUP)
        flags |= (self.rng.random() < 0.05) * int(HeaderFlag.DUPLICATED)
        send_us = (self.now_us() - self.rng.randrange(0, 50_000)) & 0xFFFF_FFFF
        return flags, (path_id << 24) | (peer.path_seq[path_id] & 0xFF_FFFF), send_us

    def _ip(self, peer: Peer, size: int | None = None) -> bytes:
        rng = self.rng
        size = size or rng.choice([40, 52, 100, 576, 1200, 1400, rng.randrange(40, 1401)])
        far_v4, far_v6 = SERVER_V4, bytes(15) + b"\x01"
        own_v4 = peer.inner_v4 if rng.random() < 0.97 else rng.randbytes(4)  # else spoofed
        if rng.random() < 0.8 or not peer.inner_v6:
            src, dst = (own_v4, far_v4) if self.to_server else (far_v4, own_v4)
            return ipv4_packet(rng, src, dst, size)
        own_v6 = peer.inner_v6 if rng.random() < 0.97 else rng.randbytes(16)
        src6, dst6 = (own_v6, far_v6) if self.to_server else (far_v6, own_v6)
        return ipv6_packet(rng, src6, dst6, size)

    def _valid_ip(self, peer: Peer, size: int | None = None) -> list[bytes]:
        datagram = peer.codec.seal_ip(self._ip(peer, size), *self._fields(peer))
        assert datagram is not None
        self.valid.append(datagram)
        return [datagram]

    def _stamp(self) -> int:
        rng = self.rng
        pick = rng.random()
        if pick < 0.85:
            return self.wall_ns() - rng.randrange(0, 200_000_000)
        if pick < 0.95:
            return self.wall_ns() + rng.choice([-1, 1]) * rng.randrange(30 * 10**9, 90 * 10**9)
        return rng.randrange(-(2**63), 2**63)

    def _valid_control(self, peer: Peer) -> list[bytes]:
        rng = self.rng
        flags, word, send_us = self._fields(peer)
        pick = rng.random()
        if pick < 0.55:
            if peer.v2 and rng.random() < 0.5:
                flags |= _ECHO
            payload = pack_heartbeat(self._stamp()) if rng.random() < 0.95 else rng.randbytes(5)
            datagram = peer.codec.seal_control(_HEARTBEAT, payload, flags, word, send_us)
        elif pick < 0.75:
            datagram = peer.codec.seal_control(_HANDSHAKE, b"", flags, word, send_us)
        else:
            entries = [
                FeedbackEntry(
                    rng.randrange(20),
                    rng.randrange(1 << 24),
                    rng.randrange(1 << 32),
                    rng.randrange(1 << 32),
                    rng.randrange(1 << 32),
                    rng.randrange(1 << 32),
                )
                for _ in range(rng.randrange(0, 17))
            ]
            payload = pack_feedback(entries) if rng.random() < 0.9 else rng.randbytes(30)
            datagram = peer.codec.seal_control(_FEEDBACK, payload, flags, word, send_us)
        self.valid.append(datagram)
        return [datagram]

    def _crafted(self, peer: Peer) -> list[bytes]:
        """A valid tag over fields the codec must still refuse or handle."""
        rng = self.rng
        ptype = rng.choice([0, _IP, _IP, _HEARTBEAT, _HANDSHAKE, 4, _FEEDBACK, 6, 255])
        seq = rng.choice([0, 1, peer.codec.last_seq, rng.randrange(1 << 32), (1 << 32) - 1])
        compression = rng.choice([0, 0, 1, 1, 2, 255])
        pick = rng.randrange(6)
        if pick == 0:
            payload = b""
        elif pick == 1:
            payload = zlib.compress(bytes(rng.randrange(1400, 70_000)), 9, 16 + zlib.MAX_WBITS)
        elif pick == 2:
            payload = zlib.compress(self._ip(peer), 1, 16 + zlib.MAX_WBITS)[: rng.randrange(40)]
        elif pick == 3:
            payload = self._ip(peer)
        else:
            payload = rng.randbytes(rng.randrange(0, 1400))
        flags, word, send_us = self._fields(peer)
        flags |= rng.randrange(256) if rng.random() < 0.2 else 0
        return [peer.sealer.seal(ptype, seq, compression, payload, flags, word, send_us)]

    # broken -----------------------------------------------------------------------------------

    def _a_valid_one(self, peer: Peer) -> bytes:
        if self.valid and self.rng.random() < 0.5:
            return self.rng.choice(self.valid)
        return (self._valid_ip if self.rng.random() < 0.7 else self._valid_control)(peer)[0]

    def _bad_tag(self, peer: Peer) -> list[bytes]:
        buf = bytearray(self._a_valid_one(peer))
        where = self.rng.choice(["header", "nonce", "ciphertext", "tag"])
        spans = {"header": (8, 22), "nonce": (22, 34), "ciphertext": (34, len(buf) - 16)}
        low, high = spans.get(where, (len(buf) - 16, len(buf)))
        if high <= low:
            low, high = len(buf) - 16, len(buf)
        buf[self.rng.randrange(low, high)] ^= 1 << self.rng.randrange(8)
        return [bytes(buf)]

    def _mutated(self, peer: Peer) -> list[bytes]:
        rng = self.rng
        buf = bytearray(self._a_valid_one(peer))
        for _ in range(rng.randrange(1, 5)):
            op = rng.randrange(4)
            if op == 0 and buf:
                buf[rng.randrange(min(len(buf), 40))] = rng.randrange(256)  # the header mostly
            elif op == 1 and buf:
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            elif op == 2:
                buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
            elif buf:
                del buf[rng.randrange(len(buf))]
        return [bytes(buf)]

    def _truncated(self, peer: Peer) -> list[bytes]:
        data = self._a_valid_one(peer)
        if self.rng.random() < 0.7:
            return [data[: self.rng.randrange(len(data))]]
        return [data + self.rng.randbytes(self.rng.randrange(1, 64))]

    def _replay(self, peer: Peer) -> list[bytes]:
        if not self.valid:
            return self._valid_ip(peer)
        return [self.rng.choice(self.valid) for _ in range(self.rng.choice([1, 1, 1, 2, 8]))]

    def _random(self, _peer: Peer) -> list[bytes]:
        rng = self.rng
        return [rng.randbytes(rng.choice([rng.randrange(0, 60), rng.randrange(0, 1500)]))]

    def _random_after_header(self, peer: Peer) -> list[bytes]:
        """A plausible header (right length, this session) over random bytes: the tag fails."""
        rng = self.rng
        body = rng.randbytes(rng.randrange(28, 1450))
        ptype = rng.choice([_IP, _HEARTBEAT, _HANDSHAKE, _FEEDBACK])
        header = struct.pack(
            ">BBIIHBBII", 1, ptype, peer.session_id, rng.randrange(1 << 32), len(body), 0, 0, 0, 0
        )
        return [header + body]

    def _other_key(self, peer: Peer) -> list[bytes]:
        other = Sealer(self.rng.randbytes(32), peer.session_id)
        return [other.seal(_IP, peer.codec.last_seq + 1, 0, self._ip(peer))]

    def _super_packet(self, peer: Peer) -> list[bytes]:
        """Equal-size datagrams sent as one GSO buffer (some broken or replayed among them)."""
        rng = self.rng
        size = rng.choice([100, 576, 1400])
        run = [self._valid_ip(peer, size)[0] for _ in range(rng.randrange(2, 40))]
        for _ in range(rng.randrange(3)):
            index = rng.randrange(len(run))
            if rng.random() < 0.5:
                broken = bytearray(run[index])
                broken[-1] ^= 0x80
                run[index] = bytes(broken)
            else:
                run[index] = run[rng.randrange(len(run))]
        if rng.random() < 0.3:
            run[-1] = run[-1][: rng.randrange(1, len(run[-1]))]  # a shorter last segment
        return run

    def _garbage_super(self, _peer: Peer) -> list[bytes]:
        rng = self.rng
        size = rng.randrange(1, 1500)
        return [rng.randbytes(size) for _ in range(rng.randrange(2, MAX_GSO_SEGMENTS + 1))]

    def _oversize(self, peer: Peer) -> list[bytes]:
        rng = self.rng
        size = rng.randrange(1500, 65_000)
        if rng.random() < 0.5:  # a header whose length agrees with it
            header = struct.pack(">BBIIHBBII", 1, _IP, peer.session_id, 1, size - 22, 0, 0, 0, 0)
            return [header + rng.randbytes(size - 22)]
        return [rng.randbytes(size)]


def send(sock: socket.socket, datagrams: list[bytes], dest: tuple[str, int]) -> int:
    """Send as one GSO buffer when it can be one (equal sizes, the last no longer); returns how
    many datagrams left."""
    size = len(datagrams[0])
    gso_ok = (
        1 < len(datagrams) <= MAX_GSO_SEGMENTS
        and size > 0
        and all(len(d) == size for d in datagrams[:-1])
        and 0 < len(datagrams[-1]) <= size
        and sum(map(len, datagrams)) <= 65_000
    )
    if gso_ok:
        segment = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        try:
            sock.sendmsg([b"".join(datagrams)], segment, 0, dest)
            return len(datagrams)
        except OSError:
            pass  # no GSO here: one by one
    sent = 0
    for datagram in datagrams:
        try:
            sock.sendto(datagram, dest)
            sent += 1
        except OSError:  # EMSGSIZE above 65507: nothing left
            pass
    return sent


def _udp(host: str = "127.0.0.1", buffer: int = 65536) -> socket.socket:
    """A non-blocking socket; a sender's small buffer lets replies overflow, harmlessly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer)
    except OSError:  # not root
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    sock.bind((host, 0))
    sock.setblocking(False)  # as the data planes' sockets are
    return sock


# --- the server side ---------------------------------------------------------------------------


def fuzz_server(count: int, seed: int) -> FuzzReport:
    """``count`` datagrams into a ServerDataPlane with one v1 and one v2 session."""
    rng = random.Random(seed)
    report = FuzzReport("server")
    clock = [time.monotonic()]
    offset_ns = time.time_ns() - int(clock[0] * 1e9)
    peers = [
        Peer(0x0000_1001, rng.randbytes(32), False, bytes([10, 8, 0, 2]), b""),
        Peer(0x0000_1002, rng.randbytes(32), True, bytes([10, 8, 0, 3]), bytes(15) + b"\x03"),
    ]
    null = os.open(os.devnull, os.O_WRONLY)
    sock = open_data_socket(0, "::")
    port = sock.getsockname()[1]
    dp = ServerDataPlane(null, sock, clock=lambda: clock[0])

    def install(peer: Peer) -> None:
        v6 = IPv6Address(peer.inner_v6) if peer.inner_v6 else None
        dp.install(
            peer.session_id,
            peer.key,
            f"fuzz{peer.session_id:x}",
            IPv4Address(peer.inner_v4),
            v6,
            v2=peer.v2,
        )

    by_id = {p.session_id: p for p in peers}
    dp._on_expire = lambda sid: install(by_id[sid])  # an idle-expired session comes back
    for peer in peers:
        install(peer)
    homes = {p.session_id: [_udp(), _udp()] for p in peers}
    strangers = [_udp(f"127.0.0.{2 + i % 4}") for i in range(STRANGERS)]
    gen = Generator(
        rng,
        peers,
        to_server=True,
        wall_ns=lambda: offset_ns + int(clock[0] * 1e9),
        now_us=lambda: int(clock[0] * 1e6),
    )
    recent: list[str] = []
    pending = 0
    next_sweep = clock[0] + 1.0
    try:
        with counting_opens() as accepted:
            while report.sent < count:
                name, peer, datagrams = gen.next()
                report.kinds[name] += 1
                recent.append(name)
                home = rng.random() < 0.75
                sender = rng.choice(homes[peer.session_id] if home else strangers)
                sent = send(sender, datagrams, ("127.0.0.1", port))
                report.sent += sent
                pending += sent
                if pending < DRAIN_EVERY:
                    continue
                pending = 0
                try:
                    _drain_server(dp, report, clock)
                    if clock[0] >= next_sweep:
                        next_sweep = clock[0] + 1.0
                        dp.sweep()
                except Exception:
                    report.crash(recent)
                recent = []
            try:
                _drain_server(dp, report, clock)
            except Exception:
                report.crash(recent)
            account(report, dp.drops, accepted[0])
    finally:
        for s in [sock, *strangers, *(s for pair in homes.values() for s in pair)]:
            s.close()
        os.close(null)
    return report


def _drain_server(dp: ServerDataPlane, report: FuzzReport, clock: list[float]) -> None:
    while True:
        clock[0] += VIRTUAL_STEP_S
        read = dp.on_datagrams()
        report.read += read
        for session_id in list(dp.sessions):  # what the engine timer would run by now
            deadline = dp.sessions[session_id].engine.next_timer()
            if deadline is not None and deadline <= clock[0]:
                dp._on_timer(session_id)
        if not read:
            return


# --- the client side ---------------------------------------------------------------------------


def fuzz_client(count: int, seed: int) -> FuzzReport:
    """``count`` datagrams into a v1 and a v2 ClientDataPlane (half each), from the server's
    address and from foreign ones."""
    report = FuzzReport("client")
    drops = DropCounters()
    with counting_opens() as accepted:
        for index, v2 in enumerate((False, True)):
            share = count // 2 if index == 0 else count - count // 2
            asyncio.run(_fuzz_one_client(share, seed + index, v2, report, drops))
        account(report, drops, accepted[0])
    return report


async def _fuzz_one_client(
    count: int, seed: int, v2: bool, report: FuzzReport, drops: DropCounters
) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    peer = Peer(0x0000_2001 + v2, rng.randbytes(32), v2, bytes([10, 8, 0, 9]), bytes(15) + b"\x09")
    server = _udp()
    foreign = [_udp(), _udp("127.0.0.2")]
    uplinks = [Uplink(f"wan{i}", _udp(buffer=UPLINK_BUFFER_BYTES)) for i in (1, 2)]
    null = os.open(os.devnull, os.O_WRONLY)
    now = loop.time()
    wall_offset = time.time_ns() - int(now * 1e9)
    engine: BondEngine[int] = BondEngine(
        DataSession(peer.session_id, peer.key, numbered_control=v2, drops=drops),
        BondConfig(Role.CLIENT, v2, wall_offset_ns=wall_offset),
        now,
    )
    for index, uplink in enumerate(uplinks):
        engine.add_path(index, uplink.label, now)
    tunnel = Tunnel(engine, server.getsockname(), peer.inner_v4, peer.inner_v6)
    dp = ClientDataPlane(null, uplinks, tunnel)
    gen = Generator(
        rng,
        [peer],
        to_server=False,
        wall_ns=lambda: wall_offset + int(loop.time() * 1e9),
        now_us=lambda: int(loop.time() * 1e6),
    )
    recent: list[str] = []
    pending = 0
    sent_total = 0
    try:
        dp.send_handshakes()
        while sent_total < count:
            name, _peer, datagrams = gen.next()
            report.kinds[name] += 1
            recent.append(name)
            target = rng.randrange(len(uplinks))
            sender = server if rng.random() < 0.9 else rng.choice(foreign)
            sent = send(sender, datagrams, uplinks[target].sock.getsockname())
            sent_total += sent
            pending += sent
            if pending < DRAIN_EVERY:
                continue
            pending = 0
            try:
                _drain_client(dp, report, loop)
            except Exception:
                report.crash(recent)
            recent = []
        try:
            _drain_client(dp, report, loop)
        except Exception:
            report.crash(recent)
    finally:
        report.sent += sent_total
        for s in [server, *foreign, *(u.sock for u in uplinks)]:
            s.close()
        os.close(null)


def _drain_client(dp: ClientDataPlane, report: FuzzReport, loop: asyncio.AbstractEventLoop) -> None:
    counts = dp.drops.counts
    while True:
        # on_datagrams returns what it handed the engine; a foreign source's datagrams were
        # read and counted before that
        foreign = counts[DropReason.FOREIGN_SOURCE]
        read = sum(dp.on_datagrams(index) for index in range(len(dp.uplinks)))
        read += counts[DropReason.FOREIGN_SOURCE] - foreign
        report.read += read
        deadline = dp.engine.next_timer()
        if deadline is not None and deadline <= loop.time():
            dp._on_timer(0)
        if not read:
            return


# --- the command -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="datagrams per side")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--side", choices=("both", "server", "client"), default="both")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    reports = []
    for side, run in (("server", fuzz_server), ("client", fuzz_client)):
        if args.side in ("both", side):
            started = time.monotonic()
            report = run(args.count, seed)
            print(f"datagram fuzz, {side}, seed {seed}: {time.monotonic() - started:.1f} s")
            print("\n".join(report.lines()), flush=True)
            reports.append(report)
    failed = False
    for report in reports:
        for trace in report.crashes:
            print(f"CRASH ({report.side}) {trace}", file=sys.stderr)
        if report.crash_count or report.unaccounted or report.read != report.sent:
            failed = True
    print(f"crashes: {sum(r.crash_count for r in reports)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
