"""The mTLS control server (SPEC §3): one JSON request per connection, one session per answer.

It runs on an event loop of its own, in a thread, so TLS handshakes (the costly part, and open
to anyone) never delay the data plane; only the grant itself, a few operations on the session
table and its hooks, is handed to the loop that called ``start`` (the table's owner). Each
connection has its own task, a short handshake deadline and one deadline for the whole exchange,
so a slow or hostile peer only ever costs its own task; connections over the caps in total or
per source, or over the rate of new connections per source, are reset right after ``accept``,
before any TLS work (the accept loop drains the backlog without a loop turn per connection, so a
flood of them costs an accept and a close each). Connections without a certificate never get a
log line of their own: they are counted and summarised (``Admission``). The identity is the
client certificate's CN. A connection that selects the ALPN protocol ``fluxify-channel/1`` is
the persistent control channel of a ``rekey`` session instead (its frames go to a
``ChannelHub``).
"""

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from cryptography import x509

from fluxify.errors import RemoteProtocolError, SessionRefusedError
from fluxify.pki.certs import common_name
from fluxify.pki.tls_stream import TlsStream, TlsTooLongError
from fluxify.protocol.channel import CHANNEL_ALPN
from fluxify.protocol.control import (
    EXTENSION_VERSION,
    FEATURE_BOND_V2,
    FEATURE_REKEY,
    MAX_CONTROL_MESSAGE_BYTES,
    Extensions,
    SessionRequest,
    SessionResponse,
    decode_request,
    encode_response,
)
from fluxify.server.admission import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_SOURCE,
    DEFAULT_NEW_PER_SOURCE_BURST,
    DEFAULT_NEW_PER_SOURCE_PER_S,
    Admission,
    ConnectionOutcome,
    source_of,
)
from fluxify.server.channel_conn import serve_channel
from fluxify.server.channels import ChannelHub
from fluxify.server.sessions import SessionTable

log = logging.getLogger(__name__)
_T = TypeVar("_T")

CONTROL_DEADLINE_S = 10.0  # whole exchange, handshake included (SPEC §3)
HANDSHAKE_DEADLINE_S = 3.0  # a TLS handshake takes milliseconds; idle sockets must not linger
SUMMARY_INTERVAL_S = 30.0  # at most one summary line of refused/failed connections per interval
ACCEPT_BACKOFF_FIRST_S = 0.05  # after accept() fails (EMFILE, ENOBUFS ...), doubling ...
ACCEPT_BACKOFF_MAX_S = 1.0  # ... up to this; the pending connection waits in the backlog
ACCEPT_WARNING_INTERVAL_S = 30.0
LISTEN_BACKLOG = 128
ACCEPTS_PER_TURN = 64  # connections accepted in a row before the loop's other tasks run
# After our last write (a TLS alert, the answer) the connection is closed with a FIN so the
# peer reads it (an RST could discard it unread); a peer that stops reading is reset after this.
CLOSE_LINGER_S = 2.0
_LINGER_RESET = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT for refused peers


class ControlServer:
    """Serves sessions from ``table`` over mutual TLS with ``context`` (see ``pki.tls``).

    ``accepted_features`` is the set of SPEC §5 extension features this server agrees to; a
    client offering features gets the intersection back, a v1 client gets no extension field.
    ``clock`` gives the ``now`` recorded in the table (seconds, monotonic). ``is_revoked`` is
    asked about each client certificate's serial number; a revoked one gets no session.
    ``channels`` serves the persistent channels of ``rekey`` sessions (None: the feature is
    never granted). ``table``, ``clock``, ``is_revoked`` and ``channels`` are only ever used on
    the loop that called ``start``; the TLS work happens on the server's own thread.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        table: SessionTable,
        udp_port: int,
        *,
        accepted_features: frozenset[str] = frozenset(),
        deadline_s: float = CONTROL_DEADLINE_S,
        handshake_deadline_s: float = HANDSHAKE_DEADLINE_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_per_source: int = DEFAULT_MAX_PER_SOURCE,
        new_per_source_per_s: float = DEFAULT_NEW_PER_SOURCE_PER_S,
        new_per_source_burst: float = DEFAULT_NEW_PER_SOURCE_BURST,
        summary_interval_s: float = SUMMARY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        is_revoked: Callable[[int], bool] | None = None,
        channels: ChannelHub | None = None,
    ) -> None:
        self._context = context
        self._channels = channels
        if channels is not None:
            context.set_alpn_protocols([CHANNEL_ALPN])  # a v1 client offers none: no change
        self._table = table
        self._udp_port = udp_port
        self._accepted = accepted_features
        self._deadline_s = deadline_s
        self._handshake_deadline_s = min(handshake_deadline_s, deadline_s)
        self._clock = clock
        self._is_revoked = is_revoked
        self.admission = Admission(
            max_connections=max_connections,
            max_per_source=max_per_source,
            new_per_source_per_s=new_per_source_per_s,
            new_per_source_burst=new_per_source_burst,
            summary_interval_s=summary_interval_s,
        )
        self._listeners: list[socket.socket] = []
        self._owner: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # one per admitted connection
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._closing: set[asyncio.WriteTransport] = set()  # FIN sent, reset after the linger

    async def start(self, host: str | None, port: int) -> None:
        """Listen on ``host`` (None: every address, v4 and v6) and ``port`` (0: any free one)."""
        if self._thread is not None:
            raise RuntimeError("the control server is already running")
        self._owner = asyncio.get_running_loop()
        self._listeners = _listen(host, port)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run_thread, args=(ready,), name="fluxify-control", daemon=True
        )
        self._thread.start()
        await asyncio.wrap_future(ready)
        log.info("control: listening on %s", ", ".join(self.addresses()))

    def addresses(self) -> list[str]:
        return [_address_text(sock.getsockname()) for sock in self._listeners]

    @property
    def port(self) -> int:
        if not self._listeners:
            raise RuntimeError("the control server is not listening")
        return int(self._listeners[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        # The thread may still be waiting for grants queued on this loop: wait without blocking it.
        await asyncio.to_thread(thread.join)
        self._thread = self._loop = self._stopping = None
        self._listeners = []
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
        recorded in the session so a later revocation can end it. Call it on the table's loop.
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
        if request.extensions is not None and self._accepted:  # none accepted: answer as v1
            features = request.extensions.features & self._accepted
            if self._channels is None or FEATURE_BOND_V2 not in features:
                features -= {FEATURE_REKEY}  # the key phase lives in the v2 header
            extensions = Extensions(EXTENSION_VERSION, features)
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

    # --- on the control thread ---------------------------------------------------------------

    def _run_thread(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.exception("control: the control thread failed")
        finally:
            for sock in self._listeners:
                sock.close()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        self._stopping = stopping = asyncio.Event()
        tasks = [
            asyncio.create_task(self._accept_loop(sock), name=f"control accept {address}")
            for sock, address in zip(self._listeners, self.addresses(), strict=True)
        ]
        tasks.append(asyncio.create_task(self._summaries(), name="control summaries"))
        ready.set_result(None)
        await stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in self._listeners:
            sock.close()
        # Abort rather than cancel: each handler then sees EOF and ends through its own error
        # path.
        for writer in list(self._connections.values()):
            writer.transport.abort()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in list(self._closing):
            transport.abort()
        await asyncio.sleep(0)  # let the aborts run their connection_lost callbacks
        self._log_summary(time.monotonic())

    async def _accept_loop(self, listener: socket.socket) -> None:
        """Accept forever, the whole backlog per wake-up; after a failure (out of descriptors)
        back off, warn now and then."""
        loop = asyncio.get_running_loop()
        backoff = ACCEPT_BACKOFF_FIRST_S
        next_warning = 0.0
        in_a_row = 0
        while True:
            try:
                conn, address = listener.accept()
            except BlockingIOError:
                in_a_row = 0
                await _readable(loop, listener)
                continue
            except OSError as exc:
                self.admission.count(ConnectionOutcome.ACCEPT_FAILED)
                now = time.monotonic()
                if now >= next_warning:
                    next_warning = now + ACCEPT_WARNING_INTERVAL_S
                    log.warning(
                        "control: cannot accept connections (%s); retrying every %g s at most",
                        exc.strerror or exc,
                        ACCEPT_BACKOFF_MAX_S,
                    )
                await asyncio.sleep(backoff)
                if exc.errno in _RESOURCE_ERRNOS:
                    backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX_S)
                continue
            backoff = ACCEPT_BACKOFF_FIRST_S
            in_a_row += 1
            if in_a_row >= ACCEPTS_PER_TURN:
                in_a_row = 0
                await asyncio.sleep(0)  # the connections already admitted get their turn
            source = source_of(str(address[0]))
            if self.admission.admit(source, time.monotonic()) is not None:
                _close_with_reset(conn)
                continue
            conn.setblocking(False)
            task = asyncio.create_task(
                self._serve_connection(conn, _address_text(address), source),
                name=f"control {_address_text(address)}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.admission.summary_interval_s)
            self._log_summary(time.monotonic())

    def _log_summary(self, now: float) -> None:
        summary = self.admission.summary(now)
        if summary is not None:
            log.warning("control: %s", summary)

    async def _serve_connection(self, conn: socket.socket, peer: str, source: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
            self._connections[task] = writer
            started = time.monotonic()
            tls = TlsStream(reader, writer, self._context, server_side=True)
            if not await self._handshake(tls, peer):
                await _linger(reader, writer)
                return
            if self._channels is not None and tls.selected_alpn() == CHANNEL_ALPN:
                await serve_channel(
                    tls,
                    peer,
                    self._channels,
                    self._on_owner,
                    self._is_revoked,
                    attach_deadline_s=self._deadline_s,
                )
                return
            remaining = self._deadline_s - (time.monotonic() - started)
            try:
                async with asyncio.timeout(remaining):
                    await self._exchange(tls, peer)
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
            self.admission.release(source)
            if writer is None:
                conn.close()
            else:
                self._close_lingering(writer.transport)

    def _close_lingering(self, transport: asyncio.WriteTransport) -> None:
        """Close after the last write; reset a peer that has not read it within the linger."""
        transport.close()
        self._closing.add(transport)

        def reset() -> None:
            self._closing.discard(transport)
            transport.abort()  # a no-op once the close has completed

        asyncio.get_running_loop().call_later(CLOSE_LINGER_S, reset)

    async def _handshake(self, tls: TlsStream, peer: str) -> bool:
        """The TLS handshake within its deadline; a failure is counted, not logged per peer."""
        try:
            async with asyncio.timeout(self._handshake_deadline_s):
                await tls.handshake()
        except TimeoutError:
            outcome, detail = ConnectionOutcome.HANDSHAKE_TIMEOUT, "timed out"
        except ssl.SSLError as exc:
            outcome, detail = ConnectionOutcome.HANDSHAKE_FAILED, str(exc.reason or exc)
        except OSError as exc:
            outcome, detail = ConnectionOutcome.CONNECTION_FAILED, str(exc)
        else:
            return True
        self.admission.count(outcome)
        log.debug("control %s: TLS handshake failed: %s", peer, detail)
        return False

    async def _exchange(self, tls: TlsStream, peer: str) -> None:
        der = tls.peer_certificate_der()
        cert = x509.load_der_x509_certificate(der) if der else None
        identity = common_name(cert) if cert is not None else ""
        serial = cert.serial_number if cert is not None else 0
        try:
            body = await tls.read_to_eof(MAX_CONTROL_MESSAGE_BYTES)
            response = await self._grant_on_owner(identity, decode_request(body), serial)
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

    async def _grant_on_owner(
        self, identity: str, request: SessionRequest, serial: int
    ) -> SessionResponse:
        """``grant`` on the table's loop; if this task is cancelled first, it never runs."""
        return await self._on_owner(lambda: self.grant(identity, request, serial))

    async def _on_owner(self, call: Callable[[], _T]) -> _T:
        """``call()`` on the table's loop; if this task is cancelled first, it never runs."""
        owner = self._owner
        assert owner is not None
        done: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            if not done.set_running_or_notify_cancel():
                return
            try:
                done.set_result(call())
            except Exception as exc:
                done.set_exception(exc)

        owner.call_soon_threadsafe(run)
        return await asyncio.wrap_future(done)


_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _listen(host: str | None, port: int) -> list[socket.socket]:
    """Listening sockets as ``asyncio.start_server`` makes them (v6 ones v6-only)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close after our alert and read until the peer's EOF, briefly.

    A close with the peer's data still arriving makes the kernel send an RST, and an RST can
    discard the alert unread: the client would see "connection lost" instead of the reason
    (with TLS 1.3 it sends its request before it learns its certificate was rejected).
    """
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(CLOSE_LINGER_S):
            while await reader.read(16 * 1024):
                pass


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Until ``sock`` is readable (a listener: a connection waits in its backlog)."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = sock.fileno()
    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _close_with_reset(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    conn.close()


def _address_text(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
