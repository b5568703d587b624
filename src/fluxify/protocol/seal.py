"""AES-256-GCM sealing of v1 datagrams: ``header(22) || nonce(12) || ciphertext || tag(16)``.

The 22 header bytes are the AAD. One ``AESGCM`` object per key, built once (the original built a
cipher per packet). v1 nonces are random (reference §1.3). Under feature ``rekey`` the keys and
counter nonces of ``protocol.keys`` are used instead: ``seal_counted`` (docs/keys.md).
"""

import secrets
import struct
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fluxify.protocol.header import (
    HEADER,
    HEADER_SIZE,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    TAG_SIZE,
)
from fluxify.protocol.keys import SendKey

KEY_SIZE = 32
COUNTER = struct.Struct(">Q")
NONCE_END = HEADER_SIZE + NONCE_SIZE
SEAL_OVERHEAD = NONCE_SIZE + TAG_SIZE

NonceSource = Callable[[], bytes]


class RandomNonces:
    """Random 12-byte nonces from the OS CSPRNG, fetched ``batch`` at a time.

    Each nonce is handed out once. Batching turns one ``getrandom`` call per packet into one per
    ``batch`` packets. Not thread-safe: one per sender.
    """

    __slots__ = ("_batch_bytes", "_offset", "_pool")

    def __init__(self, batch: int = 256) -> None:
        self._batch_bytes = batch * NONCE_SIZE
        self._pool = b""
        self._offset = 0

    def __call__(self) -> bytes:
        start = self._offset
        if start >= len(self._pool):
            self._pool = secrets.token_bytes(self._batch_bytes)
            start = 0
        self._offset = start + NONCE_SIZE
        return self._pool[start : start + NONCE_SIZE]


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"an AES-256-GCM session key is {KEY_SIZE} bytes, got {len(key)}")


class Sealer:
    """Seals plaintexts of one session into v1 datagrams. Safe to share only within one thread."""

    __slots__ = ("aead", "nonces", "session_id")

    def __init__(self, key: bytes, session_id: int, nonces: NonceSource | None = None) -> None:
        _check_key(key)
        self.aead = AESGCM(key)
        self.nonces = nonces or RandomNonces()
        self.session_id = session_id

    def seal(  # noqa: PLR0917 - positional on the hot path: one call per datagram
        self,
        packet_type: int,
        seq: int,
        compression: int,
        plaintext: bytes,
        flags: int = 0,
        path_word: int = 0,
        send_us: int = 0,
    ) -> bytes:
        header = HEADER.pack(
            PROTOCOL_VERSION,
            packet_type,
            self.session_id,
            seq,
            len(plaintext) + SEAL_OVERHEAD,
            compression,
            flags,
            path_word,
            send_us,
        )
        nonce = self.nonces()
        return header + nonce + self.aead.encrypt(nonce, plaintext, header)


class Opener:
    """Authenticates and decrypts v1 datagrams of one key.

    ``open`` expects a datagram whose length checks already passed (see ``DataSession.open``)
    and raises ``cryptography.exceptions.InvalidTag`` when authentication fails.
    """

    __slots__ = ("aead",)

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self.aead = AESGCM(key)

    def open(self, datagram: bytes) -> bytes:
        return self.aead.decrypt(
            datagram[HEADER_SIZE:NONCE_END], datagram[NONCE_END:], datagram[:HEADER_SIZE]
        )


def seal_counted(  # noqa: PLR0917 - positional on the hot path: one call per datagram
    key: SendKey,
    session_id: int,
    packet_type: int,
    seq: int,
    compression: int,
    plaintext: bytes,
    flags: int = 0,
    path_word: int = 0,
    send_us: int = 0,
) -> bytes:
    """A datagram sealed under ``key`` with the next counter nonce and its key-phase bit.

    The caller checks ``key.sent < key.limit`` first (``DataSession`` does)."""
    counter = key.sent
    key.sent = counter + 1
    header = HEADER.pack(
        PROTOCOL_VERSION,
        packet_type,
        session_id,
        seq,
        len(plaintext) + SEAL_OVERHEAD,
        compression,
        flags | key.phase_flag,
        path_word,
        send_us,
    )
    nonce = key.nonce_prefix + COUNTER.pack(counter)
    return header + nonce + key.aead.encrypt(nonce, plaintext, header)


def open_with(aead: AESGCM, datagram: bytes) -> bytes:
    """``Opener.open`` with a given AEAD (a receive key of ``protocol.keys``)."""
    return aead.decrypt(
        datagram[HEADER_SIZE:NONCE_END], datagram[NONCE_END:], datagram[:HEADER_SIZE]
    )
