"""The session table and inner address pool (SPEC §3): who holds which id, key and addresses.

Pure bookkeeping: no clock reads (``now`` comes in as seconds on any monotonic scale), no I/O.
Randomness comes from ``secrets``. Not safe to share between threads; one event loop owns it.
"""

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv6Address

from fluxify.errors import PoolExhaustedError
from fluxify.protocol.addresses import (
    FIRST_CLIENT_HOST,
    LAST_CLIENT_HOST,
    client_v4,
    client_v6,
)
from fluxify.protocol.control import MAX_SESSION_ID, SESSION_KEY_SIZE

POOL_SIZE = LAST_CLIENT_HOST - FIRST_CLIENT_HOST + 1


class RemovalReason(Enum):
    """Why a session left the table; hooks get it so they can log or keep per-reason counts."""

    REPLACED = "replaced by a reconnect of the same identity"
    EXPIRED = "idle for too long"
    CLOSED = "closed"
    REVOKED = "its certificate was revoked"
    GOODBYE = "the client said goodbye"


@dataclass(eq=False)
class Session:
    """One client session; fixed once granted (its liveness is the data plane's, not ours).

    ``features`` are the extension features accepted for it (SPEC §5); ``serial`` is the serial
    number of the client certificate it was granted to (0: unknown); ``state`` is a free slot
    for the data plane's per-session object.
    """

    session_id: int
    key: bytes = field(repr=False)  # a secret: never in a log line or a traceback
    identity: str
    host_number: int
    client_ip: IPv4Address
    client_ip6: IPv6Address
    created_at: float
    features: frozenset[str] = frozenset()
    serial: int = 0
    state: object = field(default=None, repr=False)


SessionHook = Callable[[Session], None]
RemovalHook = Callable[[Session, RemovalReason], None]


class SessionTable:
    """Live sessions indexed by id and identity (the certificate CN), and the host numbers in use.

    Invariants: ids are non-zero and unique; each host number 2..250 belongs to at most one
    session; each identity has at most one session. A reconnect replaces the old session (new id
    and key) but keeps its addresses. Addresses are handed out round-robin, skipping live ones,
    so a just-freed address is reused last.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, Session] = {}
        self._by_identity: dict[str, Session] = {}
        self._by_host: dict[int, Session] = {}
        self._last_host = FIRST_CLIENT_HOST - 1
        self._opened_hooks: list[SessionHook] = []
        self._removed_hooks: list[RemovalHook] = []

    def on_opened(self, hook: SessionHook) -> None:
        """Call ``hook(session)`` after each session is added (after any replaced one left)."""
        self._opened_hooks.append(hook)

    def on_removed(self, hook: RemovalHook) -> None:
        """Call ``hook(session, reason)`` after each session leaves the table."""
        self._removed_hooks.append(hook)

    def open(
        self,
        identity: str,
        now: float,
        features: frozenset[str] = frozenset(),
        *,
        serial: int = 0,
    ) -> Session:
        """A new session for ``identity``; raises PoolExhaustedError when no address is free."""
        old = self._by_identity.get(identity)
        host = old.host_number if old is not None else self._free_host(identity)
        if old is not None:
            self._remove(old, RemovalReason.REPLACED)
        session = Session(
            session_id=self._new_id(),
            key=secrets.token_bytes(SESSION_KEY_SIZE),
            identity=identity,
            host_number=host,
            client_ip=client_v4(host),
            client_ip6=client_v6(host),
            created_at=now,
            features=features,
            serial=serial,
        )
        self._by_id[session.session_id] = session
        self._by_identity[identity] = session
        self._by_host[host] = session
        for hook in self._opened_hooks:
            hook(session)
        return session

    def by_id(self, session_id: int) -> Session | None:
        return self._by_id.get(session_id)

    def by_identity(self, identity: str) -> Session | None:
        return self._by_identity.get(identity)

    def close(
        self, session_id: int, reason: RemovalReason = RemovalReason.CLOSED
    ) -> Session | None:
        """Remove ``session_id`` (the data plane found it idle: ``EXPIRED``), telling the hooks."""
        session = self._by_id.get(session_id)
        if session is not None:
            self._remove(session, reason)
        return session

    def close_revoked(self, serials: frozenset[int]) -> list[Session]:
        """Remove and return every session whose certificate serial is in ``serials``."""
        revoked = [s for s in self._by_id.values() if s.serial and s.serial in serials]
        for session in revoked:
            self._remove(session, RemovalReason.REVOKED)
        return revoked

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_id.values()))

    def _free_host(self, identity: str) -> int:
        for step in range(1, POOL_SIZE + 1):
            host = FIRST_CLIENT_HOST + (self._last_host - FIRST_CLIENT_HOST + step) % POOL_SIZE
            if host not in self._by_host:
                self._last_host = host
                return host
        raise PoolExhaustedError(
            f"no inner address left for {identity!r}: all {POOL_SIZE} addresses "
            f"({client_v4(FIRST_CLIENT_HOST)}-{client_v4(LAST_CLIENT_HOST)}) belong to live "
            "sessions; wait for idle sessions to expire"
        )

    def _new_id(self) -> int:
        while True:
            session_id = secrets.randbelow(MAX_SESSION_ID) + 1  # 1..2^32-1, never 0
            if session_id not in self._by_id:
                return session_id

    def _remove(self, session: Session, reason: RemovalReason) -> None:
        del self._by_id[session.session_id]
        del self._by_host[session.host_number]
        if self._by_identity.get(session.identity) is session:
            del self._by_identity[session.identity]
        for hook in self._removed_hooks:
            hook(session, reason)
