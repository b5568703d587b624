"""The key schedule of feature ``rekey`` (docs/keys.md): per-direction keys, epochs, counters.

Every epoch ``n`` of a session has a 32-byte secret ``S_n``, chained with HKDF-SHA256 from the
session key the control plane handed out (``S_-1``)::

    S_n   = HKDF(salt = salt_n, ikm = S_(n-1), info = "fluxify epoch secret" || sid || n)
    K_c2s = HKDF-Expand(S_n, "fluxify key client to server" || sid || n, 32)
    K_s2c = HKDF-Expand(S_n, "fluxify key server to client" || sid || n, 32)

``salt_0`` is empty; ``salt_n`` (n >= 1) is 32 random bytes the server sends in its REKEY
message over TLS. ``sid`` and ``n`` are 4 bytes big-endian. Nonces are counters, never random:
``n`` (4 bytes) || the number of messages sealed before under that key (8 bytes), and one key
seals at most ``MESSAGES_PER_KEY``. A receiver holds at most two epochs at a time, told apart by
the key-phase bit (``n & 1``) of the header, so it never tries two keys on one datagram.

Pure: no clock, no I/O. Not thread-safe: one per session and end, owned by one event loop.
"""

import struct
from enum import Enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from fluxify.errors import RemoteProtocolError
from fluxify.protocol.header import HeaderFlag

SECRET_SIZE = 32
SALT_SIZE = 32
KEY_SIZE = 32
MAX_EPOCH = 0xFFFF_FFFF
# NIST SP 800-38D §8 caps invocations per key; with counter nonces the cap is ours: 2^31
# messages, so the 32-bit seq numbers sent under one key span less than half the sequence space
# and never come round again under it (RFC 1982 serial arithmetic stays unambiguous).
MESSAGES_PER_KEY = 1 << 31
# A rekey is asked for at half the cap: at 1 Mpacket/s that leaves 18 minutes to complete it.
REKEY_AFTER_MESSAGES = 1 << 30

LABEL_EPOCH_SECRET = b"fluxify epoch secret"
LABEL_CLIENT_TO_SERVER = b"fluxify key client to server"
LABEL_SERVER_TO_CLIENT = b"fluxify key server to client"

KEY_PHASE = int(HeaderFlag.KEY_PHASE)
_IDS = struct.Struct(">II")
_NONCE_PREFIX = struct.Struct(">I")


class Direction(Enum):
    CLIENT_TO_SERVER = LABEL_CLIENT_TO_SERVER
    SERVER_TO_CLIENT = LABEL_SERVER_TO_CLIENT


def epoch_secret(previous: bytes, salt: bytes, session_id: int, epoch: int) -> bytes:
    """``S_epoch`` from ``S_(epoch-1)`` (the session key for epoch 0) and the epoch's salt."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=SECRET_SIZE,
        salt=salt or None,
        info=LABEL_EPOCH_SECRET + _IDS.pack(session_id, epoch),
    ).derive(previous)


def direction_key(secret: bytes, session_id: int, epoch: int, direction: Direction) -> bytes:
    """The AES-256-GCM key of one direction of an epoch."""
    return HKDFExpand(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        info=direction.value + _IDS.pack(session_id, epoch),
    ).derive(secret)


class SendKey:
    """The sending key of one epoch: its AEAD, the phase bit it puts in the header, and the
    number of messages sealed so far (the next nonce's counter)."""

    __slots__ = ("aead", "epoch", "limit", "nonce_prefix", "phase_flag", "sent")

    def __init__(self, key: bytes, epoch: int, limit: int) -> None:
        self.aead = AESGCM(key)
        self.epoch = epoch
        self.phase_flag = KEY_PHASE if epoch & 1 else 0
        self.nonce_prefix = _NONCE_PREFIX.pack(epoch)
        self.sent = 0
        self.limit = limit

    def __repr__(self) -> str:  # no key material
        return f"SendKey(epoch={self.epoch}, sent={self.sent})"


class ReceiveKey:
    """The receiving key of one epoch and how many datagrams it authenticated."""

    __slots__ = ("aead", "epoch", "received")

    def __init__(self, key: bytes, epoch: int) -> None:
        self.aead = AESGCM(key)
        self.epoch = epoch
        self.received = 0

    def __repr__(self) -> str:
        return f"ReceiveKey(epoch={self.epoch}, received={self.received})"


class KeySchedule:
    """The keys of one session at one end.

    The zero state is epoch 0, derived from the session key: sending and receiving under it.
    ``install(n, salt)`` derives epoch ``n`` (the next one) and accepts it at once; the client
    also sends under it at once (``client=True``), the server only after ``switch_send(n)``
    (when the client acknowledged it). ``retire(n)`` stops accepting an old epoch; installing
    ``n`` replaces ``n - 2`` in its phase slot if it was still there.
    """

    __slots__ = (
        "_next_send",
        "_secret",
        "client",
        "limit",
        "newest",
        "receive",
        "rekey_after",
        "send",
        "session_id",
    )

    def __init__(
        self,
        session_key: bytes,
        session_id: int,
        *,
        client: bool,
        limit: int = MESSAGES_PER_KEY,
        rekey_after: int = REKEY_AFTER_MESSAGES,
    ) -> None:
        self.session_id = session_id
        self.client = client
        self.limit = limit
        self.rekey_after = min(rekey_after, limit)
        self._secret = epoch_secret(session_key, b"", session_id, 0)
        self.newest = 0
        self.send = self._send_key(0)
        self.receive: list[ReceiveKey | None] = [self._receive_key(0), None]
        self._next_send: SendKey | None = None

    def __repr__(self) -> str:
        return f"KeySchedule(newest={self.newest}, send={self.send!r}, receive={self.receive!r})"

    @property
    def wants_rekey(self) -> bool:
        """The send key carried ``rekey_after`` messages: a new epoch is due."""
        return self.send.sent >= self.rekey_after

    @property
    def exhausted(self) -> bool:
        """The send key may seal nothing more: sending stops until a new epoch is used."""
        return self.send.sent >= self.send.limit

    def install(self, epoch: int, salt: bytes) -> None:
        """Derive and accept epoch ``epoch``, which must be ``newest + 1``."""
        if epoch != self.newest + 1 or epoch > MAX_EPOCH:
            raise RemoteProtocolError(
                f"rekey to epoch {epoch}, but the newest key is epoch {self.newest}; "
                "epochs go up by one"
            )
        if len(salt) != SALT_SIZE:
            raise RemoteProtocolError(f"rekey salt is {len(salt)} bytes, expected {SALT_SIZE}")
        self._secret = epoch_secret(self._secret, salt, self.session_id, epoch)
        self.newest = epoch
        self.receive[epoch & 1] = self._receive_key(epoch)
        key = self._send_key(epoch)
        if self.client:
            self.send = key
        else:
            self._next_send = key

    def switch_send(self, epoch: int) -> bool:
        """Server: send under ``epoch`` from now on (it was installed). False if not pending."""
        key = self._next_send
        if key is None or key.epoch != epoch:
            return False
        self.send, self._next_send = key, None
        return True

    def retire(self, epoch: int) -> bool:
        """Stop accepting ``epoch`` (never the newest). True when it was accepted until now."""
        slot = self.receive[epoch & 1]
        if slot is None or slot.epoch != epoch or epoch == self.newest:
            return False
        self.receive[epoch & 1] = None
        return True

    def accepted_epochs(self) -> list[int]:
        return sorted(k.epoch for k in self.receive if k is not None)

    def received_under(self, epoch: int) -> int:
        slot = self.receive[epoch & 1]
        return slot.received if slot is not None and slot.epoch == epoch else 0

    def _send_key(self, epoch: int) -> SendKey:
        direction = Direction.CLIENT_TO_SERVER if self.client else Direction.SERVER_TO_CLIENT
        return SendKey(
            direction_key(self._secret, self.session_id, epoch, direction), epoch, self.limit
        )

    def _receive_key(self, epoch: int) -> ReceiveKey:
        direction = Direction.SERVER_TO_CLIENT if self.client else Direction.CLIENT_TO_SERVER
        return ReceiveKey(direction_key(self._secret, self.session_id, epoch, direction), epoch)
