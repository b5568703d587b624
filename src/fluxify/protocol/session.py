"""The data plane's per-session codec: seal IP packets for the wire, open datagrams from it.

This is the whole per-packet protocol work of one session and one peer: sequence numbering,
compression, sealing, length/version/tag checks, the replay window, inflation and the IP sanity
check. It keeps no per-packet objects, does no logging and reads no clock; every drop is counted
in ``drops`` by reason. v1 semantics (SPEC §2): one key for both directions, random nonces, IP
packets numbered 1, 2, … per direction, heartbeats, echoes and handshakes numbered 0. With
``numbered_control`` (feature ``bond-v2``) control packets are numbered 1, 2, … in a sequence
space of their own and pass a replay window of their own, so a captured heartbeat cannot be
replayed; a v1 peer never sees such a session. With ``keys`` (feature ``rekey``,
docs/keys.md) each direction has its own key epochs and counter nonces, every message is
counted against its key, and a full key stops sending (``key_exhausted``) instead of reusing it.

``open`` does the cheap checks first — length, version, session, type, key phase, and whether
the seq could still be accepted by its replay window — and only then the AES-GCM work.
"""

from cryptography.exceptions import InvalidTag

from fluxify.protocol.compression import (
    MIN_COMPRESSIBLE_SIZE,
    CompressionPolicy,
    InflateError,
    inflate,
)
from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.header import (
    HEADER,
    HEADER_SIZE,
    MAX_SEQ,
    MIN_DATAGRAM_SIZE,
    PROTOCOL_VERSION,
    Compression,
    HeaderFlag,
    PacketType,
)
from fluxify.protocol.heartbeat import HANDSHAKE_PAYLOAD, pack_heartbeat
from fluxify.protocol.keys import KEY_PHASE, KeySchedule
from fluxify.protocol.replay import ReplayWindow
from fluxify.protocol.seal import (
    COUNTER,
    NONCE_END,
    SEAL_OVERHEAD,
    NonceSource,
    Opener,
    Sealer,
    seal_counted,
)

IPV4_MIN_HEADER_SIZE = 20
IPV6_HEADER_SIZE = 40
UNNUMBERED_SEQ = 0  # heartbeats, echoes and handshakes

# Plain ints for the hot path: comparing an int with an IntEnum member is slower.
_IP = int(PacketType.IP)
_HEARTBEAT = int(PacketType.HEARTBEAT)
_HANDSHAKE = int(PacketType.HANDSHAKE)
_GZIP = int(Compression.GZIP)
_NONE = int(Compression.NONE)
_FEEDBACK = int(PacketType.FEEDBACK)
_DUPLICATED = int(HeaderFlag.DUPLICATED)
_KEY_EXHAUSTED = int(DropReason.KEY_EXHAUSTED)


_CONTROL_TYPES = frozenset({_HEARTBEAT, _HANDSHAKE, _FEEDBACK})


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
    ``drops`` may be shared with the caller (e.g. the server's global counters). Fields of the
    last accepted datagram are left in ``received_*`` for the caller (no tuple per packet). Not
    thread-safe: owned by one event loop.
    """

    __slots__ = (
        "_control_seq",
        "_opener",
        "_sealer",
        "_seq",
        "compression",
        "control_replay",
        "drops",
        "keys",
        "late_copy",
        "numbered_control",
        "received_flags",
        "received_path_word",
        "received_send_us",
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
        numbered_control: bool = False,
        keys: KeySchedule | None = None,
    ) -> None:
        self.session_id = session_id
        self.keys = keys
        self._sealer = Sealer(key, session_id, nonces)
        self._opener = Opener(key)
        self._seq = 0
        self._control_seq = 0
        self.numbered_control = numbered_control
        self.compression = compression or CompressionPolicy()
        self.drops = drops or DropCounters()
        self.replay = ReplayWindow()
        self.control_replay = ReplayWindow()
        self.received_seq = 0  # seq of the last datagram ``open`` accepted
        self.received_flags = 0  # reserved[1] of it
        self.received_path_word = 0  # reserved[2..5] of it (bond-v2)
        self.received_send_us = 0  # reserved[6..9] of it (bond-v2)
        # the last ``open`` dropped the second copy of a duplicated IP packet (flag DUPLICATED):
        # not yet authenticated; ``authentic_copy`` tells, for its path's accounting
        self.late_copy = False

    # -- sending ---------------------------------------------------------------------------

    def seal_ip(
        self, packet: bytes, flags: int = 0, path_word: int = 0, send_us: int = 0
    ) -> bytes | None:
        """The datagram carrying one IP packet under the next number (``last_seq``), or None
        (counted) for an empty packet or a used-up send key.

        ``reseal_ip`` does the same work in readable steps; this is it flattened into one call
        per packet (the hot path: ~1 µs of Python calls less per packet)."""
        size = len(packet)
        if not size:
            self.drops.counts[DropReason.EMPTY_IP] += 1
            return None
        keys = self.keys
        key = None
        if keys is not None:
            key = keys.send
            if key.sent >= key.limit:
                self.drops.counts[_KEY_EXHAUSTED] += 1  # never reuse a key past its limit
                return None
        seq = self._seq + 1
        if seq > MAX_SEQ:
            # wrap, skipping 0: 0 marks unnumbered packets. Under ``keys`` one key carries fewer
            # than 2^31 numbers, so no number comes round again under the same key.
            seq = 1
        self._seq = seq
        payload, compression = packet, _NONE
        policy = self.compression
        if policy.enabled and size >= MIN_COMPRESSIBLE_SIZE:
            if policy.skip:  # backing off on incompressible traffic: no call for it
                policy.skip -= 1
            else:
                payload, compression = policy.encode(packet)
                size = len(payload)
        if key is None:
            sealer = self._sealer
            header = HEADER.pack(
                PROTOCOL_VERSION,
                _IP,
                self.session_id,
                seq,
                size + SEAL_OVERHEAD,
                compression,
                flags,
                path_word,
                send_us,
            )
            nonce = sealer.nonces()
            return header + nonce + sealer.aead.encrypt(nonce, payload, header)
        counter = key.sent
        key.sent = counter + 1
        header = HEADER.pack(
            PROTOCOL_VERSION,
            _IP,
            self.session_id,
            seq,
            size + SEAL_OVERHEAD,
            compression,
            flags | key.phase_flag,
            path_word,
            send_us,
        )
        nonce = key.nonce_prefix + COUNTER.pack(counter)
        return header + nonce + key.aead.encrypt(nonce, payload, header)

    def reseal_ip(
        self, seq: int, packet: bytes, flags: int = 0, path_word: int = 0, send_us: int = 0
    ) -> bytes:
        """IP packet ``seq`` sealed again (a duplicate or a re-injection): the receiver's replay
        window keeps whichever copy arrives first. b"" (counted) when the send key is full."""
        payload, compression = self.compression.encode(packet)
        return self._seal(_IP, seq, compression, payload, flags, path_word, send_us)

    def seal_control(
        self, packet_type: int, payload: bytes, flags: int = 0, path_word: int = 0, send_us: int = 0
    ) -> bytes:
        """A heartbeat, echo, handshake or feedback: unnumbered (v1) or numbered (bond-v2)."""
        seq = UNNUMBERED_SEQ
        if self.numbered_control:
            seq = self._control_seq + 1
            if seq > MAX_SEQ:
                seq = 1
            self._control_seq = seq
        return self._seal(packet_type, seq, _NONE, payload, flags, path_word, send_us)

    def _seal(  # noqa: PLR0917 - positional on the hot path
        self,
        packet_type: int,
        seq: int,
        compression: int,
        payload: bytes,
        flags: int,
        path_word: int,
        send_us: int,
    ) -> bytes:
        keys = self.keys
        if keys is None:
            return self._sealer.seal(
                packet_type, seq, compression, payload, flags, path_word, send_us
            )
        key = keys.send
        if key.sent >= key.limit:
            self.drops.counts[_KEY_EXHAUSTED] += 1
            return b""  # nothing to send: the caller's UDP send of b"" carries no datagram
        return seal_counted(
            key, self.session_id, packet_type, seq, compression, payload, flags, path_word, send_us
        )

    def seal_heartbeat(self, now_ns: int) -> bytes:
        return self.seal_control(_HEARTBEAT, pack_heartbeat(now_ns))

    def seal_echo(self, heartbeat_payload: bytes) -> bytes:
        """The server's echo: the same payload bytes, unnumbered (the original numbered them)."""
        return self.seal_control(_HEARTBEAT, heartbeat_payload)

    def seal_handshake(self) -> bytes:
        return self.seal_control(_HANDSHAKE, HANDSHAKE_PAYLOAD)

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
        version, ptype, session_id, seq, length, flag, flags, word, send_us = HEADER.unpack_from(
            datagram
        )
        if length != size - HEADER_SIZE:
            counts[DropReason.LENGTH_MISMATCH] += 1
            return None
        if version != PROTOCOL_VERSION:
            counts[DropReason.BAD_VERSION] += 1
            return None
        if session_id != self.session_id:
            counts[DropReason.UNKNOWN_SESSION] += 1
            return None
        if ptype != _IP and ptype not in _CONTROL_TYPES:
            counts[DropReason.UNKNOWN_TYPE] += 1
            return None
        if ptype == _IP:
            if not self.replay.fresh(seq):  # seen or too old: no crypto spent on it
                if flags & _DUPLICATED:
                    counts[DropReason.DUPLICATE] += 1
                    self.late_copy = True
                else:
                    counts[DropReason.REPLAY] += 1
                return None
        elif self.numbered_control and (
            seq == UNNUMBERED_SEQ or not self.control_replay.fresh(seq)
        ):
            counts[DropReason.CONTROL_REPLAY] += 1  # v2 numbers every control packet
            return None
        keys = self.keys
        slot = None
        if keys is None:
            aead = self._opener.aead
        else:
            slot = keys.receive[1 if flags & KEY_PHASE else 0]
            if slot is None:
                counts[DropReason.UNKNOWN_KEY] += 1  # retired, or not installed yet
                return None
            aead = slot.aead
        try:  # ``Opener.open`` inlined: one call less per datagram
            plaintext = aead.decrypt(
                datagram[HEADER_SIZE:NONCE_END], datagram[NONCE_END:], datagram[:HEADER_SIZE]
            )
        except InvalidTag:
            counts[DropReason.BAD_TAG] += 1
            return None
        if slot is not None:
            slot.received += 1
        if ptype == _IP:
            if not self.replay.accept(seq):
                counts[DropReason.DUPLICATE if flags & _DUPLICATED else DropReason.REPLAY] += 1
                return None
            first = plaintext[0] >> 4 if plaintext else 0
            if flag != _NONE or not (
                (first == 4 and len(plaintext) >= IPV4_MIN_HEADER_SIZE)
                or (first == 6 and len(plaintext) >= IPV6_HEADER_SIZE)
            ):  # gzip, or something to count: the readable path (``_inflate``)
                plaintext_ip = self._inflate(flag, plaintext)
                if plaintext_ip is None:
                    return None
                plaintext = plaintext_ip
        elif self.numbered_control:
            if not self.control_replay.accept(seq):
                counts[DropReason.CONTROL_REPLAY] += 1
                return None
        elif ptype == _FEEDBACK:
            counts[DropReason.UNKNOWN_TYPE] += 1  # feedback exists only in bond-v2 sessions
            return None
        self.received_seq = seq
        self.received_flags = flags
        self.received_path_word = word
        self.received_send_us = send_us
        return ptype, plaintext

    def authentic_copy(self, datagram: bytes) -> tuple[int, int] | None:
        """``(path word, send time)`` of a datagram ``open`` dropped as a late copy, if its tag
        is right; no window moves. Its packet was delivered by the first copy, but the path
        that brought it must count it: otherwise a second copy that loses the race reads as
        loss of its path (measured: 18-31 % on a path carrying pings' second copies)."""
        self.late_copy = False
        header = datagram[:HEADER_SIZE]
        flags = header[13]
        keys = self.keys
        if keys is None:
            aead = self._opener.aead
        else:
            slot = keys.receive[1 if flags & KEY_PHASE else 0]
            if slot is None:
                return None
            aead = slot.aead
        try:
            aead.decrypt(datagram[HEADER_SIZE:NONCE_END], datagram[NONCE_END:], header)
        except InvalidTag:  # counted already, as the duplicate ``open`` dropped
            return None
        _v, _t, _id, _seq, _len, _flag, _flags, word, send_us = HEADER.unpack_from(datagram)
        return word, send_us

    def _inflate(self, flag: int, plaintext: bytes) -> bytes | None:
        counts = self.drops.counts
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
        return plaintext
