"""The mTLS control server (SPEC §3): one JSON request per connection, one session per answer.

Each connection has its own task and one deadline covering handshake, request and answer, so a
slow or hostile peer only ever costs its own task. The identity is the client certificate's CN.
"""

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from types import TracebackType

from cryptography import x509

from fluxify.errors import RemoteProtocolError, SessionRefusedError
from fluxify.pki.certs import common_name
from fluxify.pki.tls_stream import TlsStream, TlsTooLongError
from fluxify.protocol.control import (
    EXTENSION_VERSION,
    MAX_CONTROL_MESSAGE_BYTES,
    Extensions,
    SessionRequest,
    SessionResponse,
    decode_request,
    encode_response,
)
from fluxify.server.sessions import SessionTable

log = logging.getLogger(__name__)

CONTROL_DEADLINE_S = 10.0  # whole exchange, handshake included (SPEC §3)


class ControlServer:
    """Serves sessions from ``table`` over mutual TLS with ``context`` (see ``pki.tls``).

    ``accepted_features`` is the set of SPEC §5 extension features this server agrees to; a
    client offering features gets the intersection back, a v1 client gets no extension field.
    ``clock`` gives the ``now`` recorded in the table (seconds, monotonic). ``is_revoked`` is
    asked about each client certificate's serial number; a revoked one gets no session.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        table: SessionTable,
        udp_port: int,
        *,
        accepted_features: frozenset[str] = frozenset(),
        deadline_s: float = CONTROL_DEADLINE_S,
        clock: Callable[[], float] = time.monotonic,
        is_revoked: Callable[[int], bool] | None = None,
    ) -> None:
        self._context = context
        self._table = table
        self._udp_port = udp_port
        self._accepted = accepted_features
        self._deadline_s = deadline_s
        self._clock = clock
        self._is_revoked = is_revoked
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self, host: str | None, port: int) -> None:
        """Listen on ``host`` (None: every address, v4 and v6) and ``port`` (0: any free one)."""
        self._server = await asyncio.start_server(self._serve_connection, host, port)
        log.info("control: listening on %s", ", ".join(self.addresses()))

    def addresses(self) -> list[str]:
        if self._server is None:
            return []
        return [_address_text(sock.getsockname()) for sock in self._server.sockets]

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the control server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        # Abort rather than cancel: each handler then sees EOF and ends through its own error
        # path (asyncio's stream callback logs cancelled handler tasks as errors).
        for writer in list(self._connections.values()):
            writer.transport.abort()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
            log.info("control: stopped")

    async def __aenter__(self) -> "ControlServer":
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def grant(self, identity: str, request: SessionRequest, serial: int = 0) -> SessionResponse:
        """Open (or replace) the session of ``identity``; SessionRefusedError says why not.

        ``serial`` is the client certificate's serial number, checked against revocation and
        recorded in the session so a later revocation can end it.
        """
        if not identity:
            raise SessionRefusedError("the client certificate has no common name (CN)")
        if self._is_revoked is not None and self._is_revoked(serial):
            raise SessionRefusedError("certificate revoked")
        if request.client_name and request.client_name != identity:
            raise SessionRefusedError(
                f"the request names {request.client_name!r} but the certificate is {identity!r}"
            )
        extensions = None
        if request.extensions is not None:
            extensions = Extensions(EXTENSION_VERSION, request.extensions.features & self._accepted)
        session = self._table.open(
            identity,
            self._clock(),
            extensions.features if extensions else frozenset(),
            serial=serial,
        )
        return SessionResponse(
            session_id=session.session_id,
            session_key=session.key,
            udp_port=self._udp_port,
            client_ip=session.client_ip,
            client_ip6=session.client_ip6,
            extensions=extensions,
        )

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        peer = _address_text(writer.get_extra_info("peername"))
        try:
            async with asyncio.timeout(self._deadline_s):
                await self._exchange(
                    TlsStream(reader, writer, self._context, server_side=True), peer
                )
        except TimeoutError:
            log.warning(
                "control %s: closed: no complete request within %g s", peer, self._deadline_s
            )
        except (OSError, ssl.SSLError) as exc:
            log.info("control %s: connection failed: %s", peer, exc)
        except Exception:
            log.exception("control %s: unexpected error; the connection was dropped", peer)
        finally:
            self._connections.pop(task, None)
            if not writer.is_closing():
                writer.transport.abort()

    async def _exchange(self, tls: TlsStream, peer: str) -> None:
        try:
            await tls.handshake()
        except ssl.SSLError as exc:
            log.info("control %s: TLS handshake failed: %s", peer, exc.reason or exc)
            return
        der = tls.peer_certificate_der()
        cert = x509.load_der_x509_certificate(der) if der else None
        identity = common_name(cert) if cert is not None else ""
        serial = cert.serial_number if cert is not None else 0
        try:
            body = await tls.read_to_eof(MAX_CONTROL_MESSAGE_BYTES)
            response = self.grant(identity, decode_request(body), serial)
        except TlsTooLongError:
            log.warning(
                "control %s: refused %r: request larger than %d bytes",
                peer,
                identity,
                MAX_CONTROL_MESSAGE_BYTES,
            )
            await tls.close()
            return
        except (RemoteProtocolError, SessionRefusedError) as exc:
            # v1 has no error response: the refused client just sees the connection close.
            log.warning("control %s: refused %r: %s", peer, identity, exc)
            await tls.close()
            return
        await tls.send_all(encode_response(response))
        await tls.close()
        log.info(
            "control %s: session %#010x granted to %r (%s, %s, %s)",
            peer,
            response.session_id,
            identity,
            response.client_ip,
            response.client_ip6,
            tls.version(),
        )


def _address_text(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
