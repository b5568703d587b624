"""The data plane's per-session codec: seal IP packets for the wire, open datagrams from it.

This is the whole per-packet protocol work of one session and one peer: sequence numbering,
compression, sealing, length/version/tag checks, the replay window, inflation and the IP sanity
check. It keeps no per-packet objects, does no logging and reads no clock; every drop is counted
in ``drops`` by reason. v1 semantics (SPEC §2): one key for both directions, random nonces, IP
packets numbered 1, 2, … per direction, heartbeats, echoes and handshakes numbered 0.
"""

from cryptography.exceptions import InvalidTag

from fluxify.protocol.compression import CompressionPolicy, InflateError, inflate
from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.header import (
    HEADER,
    HEADER_SIZE,
    MAX_SEQ,
    MIN_DATAGRAM_SIZE,
    PROTOCOL_VERSION,
    Compression,
    HeartbeatFlag,
    PacketType,
)
from fluxify.protocol.heartbeat import HANDSHAKE_PAYLOAD, pack_heartbeat
from fluxify.protocol.replay import ReplayWindow
from fluxify.protocol.seal import NonceSource, Opener, Sealer

IPV4_MIN_HEADER_SIZE = 20
IPV6_HEADER_SIZE = 40
UNNUMBERED_SEQ = 0  # heartbeats, echoes and handshakes

# Plain ints for the hot path: comparing an int with an IntEnum member is slower.
_IP = int(PacketType.IP)
_HEARTBEAT = int(PacketType.HEARTBEAT)
_HANDSHAKE = int(PacketType.HANDSHAKE)
_GZIP = int(Compression.GZIP)
_NONE = int(Compression.NONE)
_PROBE = int(HeartbeatFlag.PROBE)
_PROBE_ECHO = int(HeartbeatFlag.PROBE_ECHO)


def ip_version_ok(packet: bytes) -> bool:
    """True when ``packet`` starts like an IPv4 or IPv6 packet of at least a header's length."""
    if not packet:
        return False
    version = packet[0] >> 4
    if version == 4:
        return len(packet) >= IPV4_MIN_HEADER_SIZE
    return version == 6 and len(packet) >= IPV6_HEADER_SIZE


class DataSession:
    """Codec state of one session seen from one end.

    The zero state has sent nothing (the next IP packet is numbered 1) and received nothing.
    ``drops`` may be shared with the caller (e.g. the server's global counters). The replay
    window applies to IP packets only: v1 heartbeats and handshakes are all numbered 0. Not
    thread-safe: owned by one event loop.
    """

    __slots__ = (
        "_opener",
        "_sealer",
        "_seq",
        "compression",
        "drops",
        "received_flags",
        "received_seq",
        "replay",
        "session_id",
    )

    def __init__(
        self,
        session_id: int,
        key: bytes,
        *,
        compression: CompressionPolicy | None = None,
        drops: DropCounters | None = None,
        nonces: NonceSource | None = None,
    ) -> None:
        self.session_id = session_id
        self._sealer = Sealer(key, session_id, nonces)
        self._opener = Opener(key)
        self._seq = 0
        self.compression = compression or CompressionPolicy()
        self.drops = drops or DropCounters()
        self.replay = ReplayWindow()
        self.received_seq = 0  # number of the last IP packet ``open`` accepted
        self.received_flags = 0  # reserved[1] of the last heartbeat ``open`` accepted

    # -- sending ---------------------------------------------------------------------------

    def seal_ip(self, packet: bytes) -> bytes | None:
        """The datagram carrying one IP packet, or None (counted) for an empty packet."""
        if not packet:
            self.drops.counts[DropReason.EMPTY_IP] += 1
            return None
        payload, flag = self.compression.encode(packet)
        seq = self._seq + 1
        if seq > MAX_SEQ:
            seq = 1  # wrap, skipping 0: 0 marks unnumbered packets
        self._seq = seq
        return self._sealer.seal(_IP, seq, flag, payload)

    def seal_heartbeat(self, now_ns: int, received_bytes: int | None = None) -> bytes:
        """``received_bytes`` only towards a peer that negotiated ``rate-report``."""
        payload = pack_heartbeat(now_ns, received_bytes)
        return self._sealer.seal(_HEARTBEAT, UNNUMBERED_SEQ, _NONE, payload)

    def seal_echo(self, heartbeat_payload: bytes) -> bytes:
        """The server's echo: the same payload bytes, unnumbered (the original numbered them)."""
        return self._sealer.seal(_HEARTBEAT, UNNUMBERED_SEQ, _NONE, heartbeat_payload)

    def seal_probe(self, now_ns: int, received_bytes: int | None = None) -> bytes:
        """A heartbeat the peer must echo back (extension ``path-probe``)."""
        stamp = pack_heartbeat(now_ns, received_bytes)
        return self._sealer.seal(_HEARTBEAT, UNNUMBERED_SEQ, _NONE, stamp, _PROBE)

    def seal_probe_echo(self, probe_payload: bytes) -> bytes:
        return self._sealer.seal(_HEARTBEAT, UNNUMBERED_SEQ, _NONE, probe_payload, _PROBE_ECHO)

    def seal_handshake(self) -> bytes:
        return self._sealer.seal(_HANDSHAKE, UNNUMBERED_SEQ, _NONE, HANDSHAKE_PAYLOAD)

    @property
    def last_seq(self) -> int:
        """The number of the last IP packet sealed (0 before the first)."""
        return self._seq

    # -- receiving -------------------------------------------------------------------------

    def open(self, datagram: bytes) -> tuple[int, bytes] | None:
        """``(packet type, payload)`` of an accepted datagram, or None with the reason counted.

        For IP packets the payload is the inflated IP packet. The caller must have routed the
        datagram here by its session id; a different id is counted as an unknown session.
        """
        counts = self.drops.counts
        size = len(datagram)
        if size < MIN_DATAGRAM_SIZE:
            counts[DropReason.TOO_SHORT] += 1
            return None
        version, ptype, session_id, seq, length, flag, flags = HEADER.unpack_from(datagram)
        if length != size - HEADER_SIZE:
            counts[DropReason.LENGTH_MISMATCH] += 1
            return None
        if version != PROTOCOL_VERSION:
            counts[DropReason.BAD_VERSION] += 1
            return None
        if session_id != self.session_id:
            counts[DropReason.UNKNOWN_SESSION] += 1
            return None
        try:
            plaintext = self._opener.open(datagram)
        except InvalidTag:
            counts[DropReason.BAD_TAG] += 1
            return None
        if ptype == _IP:
            return self._accept_ip(seq, flag, plaintext)
        if ptype == _HEARTBEAT:
            self.received_flags = flags
            return ptype, plaintext
        if ptype == _HANDSHAKE:
            return ptype, plaintext
        counts[DropReason.UNKNOWN_TYPE] += 1
        return None

    def _accept_ip(self, seq: int, flag: int, plaintext: bytes) -> tuple[int, bytes] | None:
        counts = self.drops.counts
        if not self.replay.accept(seq):
            counts[DropReason.REPLAY] += 1
            return None
        if flag == _GZIP:
            try:
                plaintext = inflate(plaintext)
            except InflateError as exc:
                counts[DropReason.INFLATE_LIMIT if exc.too_large else DropReason.BAD_GZIP] += 1
                return None
        elif flag != _NONE:
            counts[DropReason.BAD_GZIP] += 1
            return None
        if not plaintext:
            counts[DropReason.EMPTY_IP] += 1
            return None
        if not ip_version_ok(plaintext):
            counts[DropReason.NOT_IP] += 1
            return None
        self.received_seq = seq
        return _IP, plaintext
