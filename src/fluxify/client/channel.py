"""The client's end of the persistent control channel of one session (feature ``rekey``).

A second mutual-TLS connection to the control port (ALPN ``fluxify-channel/1``), attached to
the session the first one granted and kept open for the session's life: it installs the key
epochs the server offers (``protocol.rekey.ClientRekey``), asks for one when our own key is
due, says GOODBYE when we stop, and hears REVOKED when the server revokes our certificate. A
lost connection is re-established with a back-off; the data plane keeps running meanwhile under
the keys it has.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from fluxify.client.config import ServerAddress
from fluxify.client.control import connect_tls
from fluxify.errors import ControlError, RemoteProtocolError
from fluxify.pki.client_material import ClientMaterial
from fluxify.pki.tls import client_context
from fluxify.pki.tls_stream import TlsStream
from fluxify.protocol.channel import CHANNEL_ALPN, Frame, FrameDecoder, FrameType, encode_frame
from fluxify.protocol.keys import KeySchedule
from fluxify.protocol.rekey import ClientRekey, RekeyOffer

log = logging.getLogger(__name__)

CHANNEL_CONNECT_TIMEOUT_S = 10.0
CHANNEL_BACKOFF_S = (1.0, 2.0, 4.0, 8.0)
GOODBYE_TIMEOUT_S = 2.0


class ClientChannel:
    """Run ``run()`` as a task; call ``tick()`` about once a second and ``goodbye()`` on stop.

    ``on_revoked(message)`` is called once when the server says our certificate is revoked;
    the channel then ends and never reconnects. Not thread-safe: one event loop.
    """

    def __init__(
        self,
        server: ServerAddress,
        material: ClientMaterial,
        session_id: int,
        keys: KeySchedule,
        interval_s: float,
        *,
        on_revoked: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.material = material
        self.session_id = session_id
        self.rekey = ClientRekey(keys, interval_s, clock())
        self._on_revoked = on_revoked
        self._clock = clock
        self._outbox: asyncio.Queue[Frame | None] | None = None
        self.attached = asyncio.Event()
        self.revoked = False
        self._ended = False

    async def run(self) -> None:
        failures = 0
        while not self._ended:
            try:
                await self._connection()
                failures = 0
            except (ControlError, OSError) as exc:
                if self._ended:
                    return
                delay = CHANNEL_BACKOFF_S[min(failures, len(CHANNEL_BACKOFF_S) - 1)]
                if failures == 0:
                    log.warning("control channel: %s; reconnecting (every %g s at most)", exc, 8)
                failures += 1
                await asyncio.sleep(delay)
                continue
            if not self._ended:
                await asyncio.sleep(CHANNEL_BACKOFF_S[0])

    def tick(self) -> None:
        """Retire what the overlap allows; ask for a new epoch when ours is due."""
        epoch = self.rekey.on_timer(self._clock())
        if epoch is not None:
            self._send(Frame(FrameType.REKEY_REQUEST, epoch))

    async def goodbye(self) -> None:
        """Tell the server we stop (it frees the session now), then end the channel."""
        self._ended = True
        outbox = self._outbox
        if outbox is None or not self.attached.is_set():
            return
        outbox.put_nowait(Frame(FrameType.GOODBYE))
        outbox.put_nowait(None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                while self._outbox is not None:
                    await asyncio.sleep(0.01)

    def _send(self, frame: Frame) -> None:
        if self._outbox is not None and self.attached.is_set():
            self._outbox.put_nowait(frame)

    async def _connection(self) -> None:
        context = client_context(self.material)
        context.set_alpn_protocols([CHANNEL_ALPN])
        async with asyncio.timeout(CHANNEL_CONNECT_TIMEOUT_S):
            tls = await connect_tls(self.server, context)
            try:
                await tls.handshake()
            except BaseException:
                tls.abort()
                raise
        try:
            if tls.selected_alpn() != CHANNEL_ALPN:
                raise RemoteProtocolError(
                    f"the server {self.server} granted feature rekey but does not speak "
                    f"{CHANNEL_ALPN}"
                )
            outbox: asyncio.Queue[Frame | None] = asyncio.Queue()
            self._outbox = outbox
            outbox.put_nowait(Frame(FrameType.ATTACH, self.session_id))
            writer = asyncio.create_task(self._writer(tls, outbox), name="control channel out")
            try:
                await self._reader(tls, outbox)
            finally:
                outbox.put_nowait(None)
                await asyncio.gather(writer, return_exceptions=True)
        except OSError as exc:
            raise ControlError(f"the channel to {self.server} failed ({exc})") from None
        finally:
            self.attached.clear()
            self._outbox = None
            tls.abort()

    async def _writer(self, tls: TlsStream, outbox: "asyncio.Queue[Frame | None]") -> None:
        while (frame := await outbox.get()) is not None:
            await tls.send_all(encode_frame(frame))
        with contextlib.suppress(OSError):
            await tls.close_write()

    async def _reader(self, tls: TlsStream, outbox: "asyncio.Queue[Frame | None]") -> None:
        decoder = FrameDecoder()
        while not self._ended:
            data = await tls.read_some()
            if not data:
                if not self.attached.is_set():
                    raise ControlError(
                        f"the server {self.server} closed the channel of session "
                        f"{self.session_id:08x} (the session may be gone; its log says why)"
                    )
                raise ControlError(f"the server {self.server} closed the channel")
            for frame in decoder.feed(data):
                self._on_frame(frame, outbox)
                if self.revoked:
                    return

    def _on_frame(self, frame: Frame, outbox: "asyncio.Queue[Frame | None]") -> None:
        if frame.type is FrameType.ATTACHED:
            self.attached.set()
            log.info("control channel: attached to session %08x", self.session_id)
            epoch = self.rekey.request_again()
            if epoch is not None:  # it may have been lost with the old connection
                outbox.put_nowait(Frame(FrameType.REKEY_REQUEST, epoch))
        elif frame.type is FrameType.REKEY:
            epoch = self.rekey.on_rekey(RekeyOffer(frame.value, frame.salt), self._clock())
            outbox.put_nowait(Frame(FrameType.REKEY_ACK, epoch))
            log.debug("control channel: sending under key epoch %d", epoch)
        elif frame.type is FrameType.REVOKED:
            self.revoked = True
            self._ended = True
            self._on_revoked(
                f"the server {self.server} revoked the certificate of "
                f"{self.material.common_name!r} and ended its session; not reconnecting — "
                "ask for a new bundle (fluxify-server -new-client NAME -reissue)"
            )
        else:
            raise RemoteProtocolError(f"control channel: a server may not send {frame.type.name}")
