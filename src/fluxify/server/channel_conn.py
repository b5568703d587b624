"""One persistent control channel connection on the control server's thread (feature rekey).

It only moves frames: ATTACH within the deadline, then every frame from the client to the
``ChannelHub`` on the session table's loop, and every frame the hub sends back out, until
either end closes. The decisions are the hub's (``server/channels.py``).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol, TypeVar

from cryptography import x509

from fluxify.errors import RemoteProtocolError, SessionRefusedError
from fluxify.pki.certs import common_name
from fluxify.pki.tls_stream import TlsStream
from fluxify.protocol.channel import Frame, FrameDecoder, FrameType, encode_frame
from fluxify.server.channels import ChannelHub, ChannelLink

log = logging.getLogger("fluxify.server.control")  # one logger for the control port's lines
_T = TypeVar("_T")


class OnOwner(Protocol):
    """Runs a call on the session table's loop and awaits its result."""

    def __call__(self, call: Callable[[], _T]) -> Awaitable[_T]: ...


async def serve_channel(
    tls: TlsStream,
    peer: str,
    hub: ChannelHub,
    on_owner: OnOwner,
    is_revoked: Callable[[int], bool] | None,
    *,
    attach_deadline_s: float,
) -> None:
    """ATTACH within the deadline, then frames both ways until either end closes."""
    der = tls.peer_certificate_der()
    cert = x509.load_der_x509_certificate(der) if der else None
    identity = common_name(cert) if cert is not None else ""
    serial = cert.serial_number if cert is not None else 0
    decoder = FrameDecoder()
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue[Frame | None] = asyncio.Queue()

    def send(frame: Frame | None) -> None:  # called on the table's loop
        loop.call_soon_threadsafe(outbox.put_nowait, frame)

    try:
        async with asyncio.timeout(attach_deadline_s):
            frames: list[Frame] = []
            while not frames:
                data = await tls.read_some()
                if not data:
                    return
                frames = decoder.feed(data)
        first = frames.pop(0)
        if first.type is not FrameType.ATTACH:
            raise RemoteProtocolError(f"control channel: {first.type.name} before ATTACH")
        if is_revoked is not None and await on_owner(partial(is_revoked, serial)):
            raise SessionRefusedError("certificate revoked")
        link = await on_owner(partial(hub.attach, first.value, identity, send))
    except TimeoutError:
        log.warning("control %s: channel closed: no ATTACH within %g s", peer, attach_deadline_s)
        return
    except (RemoteProtocolError, SessionRefusedError) as exc:
        log.warning("control %s: channel of %r refused: %s", peer, identity, exc)
        await tls.close()
        return
    log.info("control %s: channel of %r attached to session %#010x", peer, identity, first.value)
    writer = asyncio.create_task(_write(tls, outbox), name=f"channel {peer}")
    try:
        await _read(tls, decoder, frames, hub, on_owner, link)
    except RemoteProtocolError as exc:
        log.warning("control %s: channel of %r closed: %s", peer, identity, exc)
    finally:
        await on_owner(partial(hub.detach, link))
        outbox.put_nowait(None)
        await asyncio.gather(writer, return_exceptions=True)
        await tls.close()


async def _read(  # noqa: PLR0917 - internal, one call site
    tls: TlsStream,
    decoder: FrameDecoder,
    frames: list[Frame],
    hub: ChannelHub,
    on_owner: OnOwner,
    link: ChannelLink,
) -> None:
    while True:
        for frame in frames:
            await on_owner(partial(hub.on_frame, link, frame))
            if frame.type is FrameType.GOODBYE:
                return
        data = await tls.read_some()
        if not data:
            return
        frames = decoder.feed(data)


async def _write(tls: TlsStream, outbox: "asyncio.Queue[Frame | None]") -> None:
    while (frame := await outbox.get()) is not None:
        await tls.send_all(encode_frame(frame))
    await tls.close()  # the hub ended the channel (the session ended): the reader sees EOF
