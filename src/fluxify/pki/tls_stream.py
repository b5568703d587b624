"""TLS over asyncio streams via ``ssl.MemoryBIO``, with the half-close Go's control plane needs.

asyncio's own TLS transport cannot half-close (``write_eof`` is unsupported) and shuts the whole
connection down when the peer's close_notify arrives, so a server could not answer a Go client
after its ``CloseWrite``. This pump can: EOF in (close_notify or TCP FIN) still lets us write.
"""

import asyncio
import contextlib
import ssl
from typing import Any

_READ_CHUNK = 16 * 1024


class TlsTooLongError(Exception):
    """The peer sent more than the caller's limit before EOF."""


class TlsStream:
    """One TLS connection on a connected (reader, writer) pair. Not safe to share between tasks."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._eof_fed = False

    async def handshake(self) -> None:
        """Complete the handshake; on failure the alert is sent before the error propagates."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
            except ssl.SSLError:
                await self._flush_quietly()
                raise
        await self._flush()

    def peer_certificate(self) -> dict[str, Any] | None:
        """The verified peer certificate as ``ssl.SSLSocket.getpeercert()`` returns it."""
        return self._tls.getpeercert()

    def peer_certificate_der(self) -> bytes | None:
        return self._tls.getpeercert(binary_form=True)

    def version(self) -> str | None:
        return self._tls.version()

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._tls.write(view)
            view = view[written:]
            await self._flush()

    async def read_to_eof(self, limit: int) -> bytes:
        """Everything the peer sends until close_notify or a TCP FIN, at most ``limit`` bytes.

        A FIN without close_notify counts as EOF: Go does the same at a record boundary, and the
        Python client of reference §2.2 (a) half-closes that way.
        """
        received = bytearray()
        while True:
            try:
                chunk = self._tls.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()
                if self._eof_fed:
                    return bytes(received)
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return bytes(received)
            if not chunk:
                return bytes(received)
            received += chunk
            if len(received) > limit:
                raise TlsTooLongError(f"more than {limit} bytes before EOF")

    def selected_alpn(self) -> str | None:
        """The ALPN protocol the handshake agreed on, if any."""
        return self._tls.selected_alpn_protocol()

    async def read_some(self) -> bytes:
        """What the peer sends next, at least one byte; b"" at EOF (close_notify or FIN)."""
        while True:
            try:
                chunk = self._tls.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()
                if self._eof_fed:
                    return b""
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            return chunk

    async def close_write(self) -> None:
        """Send close_notify (Go's ``CloseWrite``) and keep the read side open."""
        try:
            self._tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            return
        await self._flush()

    async def close(self) -> None:
        """Send close_notify if still possible, then close the TCP connection."""
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.close_write()
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self._writer.wait_closed()

    def abort(self) -> None:
        """Drop the TCP connection at once (no close_notify, nothing awaited)."""
        self._writer.transport.abort()

    async def _fill(self) -> None:
        data = await self._reader.read(_READ_CHUNK)
        if data:
            self._incoming.write(data)
        else:
            self._eof_fed = True
            self._incoming.write_eof()

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(OSError):
            await self._flush()
