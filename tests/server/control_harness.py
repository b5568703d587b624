"""A real control server on 127.0.0.1 with its PKI, and raw Go-style TLS peers for the tests."""

import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxify.client.config import ServerAddress
from fluxify.pki.certs import Issued
from fluxify.pki.client_material import ClientMaterial
from fluxify.pki.files import ServerPkiLayout
from fluxify.pki.tls import server_context
from fluxify.server.control import ControlServer
from fluxify.server.sessions import SessionTable
from tests.pki.factory import LOOPBACK_HOSTS, client_of, new_ca, server_cert, write_server_pki

UDP_PORT = 8123
RAW_TIMEOUT_S = 5.0


@dataclass
class Harness:
    ca: Issued
    layout: ServerPkiLayout
    table: SessionTable
    server: ControlServer

    @property
    def address(self) -> ServerAddress:
        return ServerAddress("127.0.0.1", self.server.port)

    def client(self, name: str, *, expired: bool = False) -> ClientMaterial:
        return client_of(self.ca, name, expired=expired)


UNLIMITED_RATE = 1e9  # new connections per second per source: no limit in practice


@asynccontextmanager
async def running_server(
    root: Path,
    *,
    hosts: tuple[str, ...] = LOOPBACK_HOSTS,
    deadline_s: float = 5.0,
    accepted_features: frozenset[str] = frozenset(),
    expired_server_cert: bool = False,
    is_revoked: Callable[[int], bool] | None = None,
    **limits: Any,
) -> AsyncIterator[Harness]:
    """``limits``: ControlServer's handshake_deadline_s, max_connections, max_per_source ...;
    the rate of new connections per source is unlimited unless given (the tests connect from
    loopback far faster than any client would)."""
    limits.setdefault("new_per_source_per_s", UNLIMITED_RATE)
    ca = new_ca()
    layout = write_server_pki(root, ca, server_cert(ca, hosts, expired=expired_server_cert))
    table = SessionTable()
    server = ControlServer(
        server_context(layout),
        table,
        UDP_PORT,
        accepted_features=accepted_features,
        deadline_s=deadline_s,
        is_revoked=is_revoked,
        **limits,
    )
    await server.start("127.0.0.1", 0)
    try:
        yield Harness(ca, layout, table, server)
    finally:
        await server.close()


def raw_client_fin(port: int, context: ssl.SSLContext, body: bytes) -> bytes:
    """Send ``body``, half-close with a bare TCP FIN (reference §2.2 (a)), read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_TIMEOUT_S) as sock:
        tls = context.wrap_socket(sock, server_hostname="127.0.0.1")
        try:
            tls.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        socket.socket.shutdown(tls, socket.SHUT_WR)
        return _read_to_eof(tls.recv)


def raw_client_close_notify(port: int, context: ssl.SSLContext, body: bytes) -> bytes:
    """What Go's client does: send, ``CloseWrite`` (a close_notify alert), read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_TIMEOUT_S) as sock:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")

        def pump(step: object) -> object:
            while True:
                try:
                    result = step() if callable(step) else None
                    sock.sendall(outgoing.read())
                    return result
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    data = sock.recv(65536)
                    if not data:
                        incoming.write_eof()
                    else:
                        incoming.write(data)

        pump(tls.do_handshake)
        pump(lambda: tls.write(body))
        with suppress(ssl.SSLWantReadError):
            tls.unwrap()
        sock.sendall(outgoing.read())

        def recv(size: int) -> bytes:
            result = pump(lambda: tls.read(size))
            assert isinstance(result, bytes)
            return result

        return _read_to_eof(recv)


def _read_to_eof(recv: Callable[[int], bytes]) -> bytes:
    received = b""
    while True:
        try:
            chunk = recv(65536)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionResetError):
            return received
        if not chunk:
            return received
        received += chunk
