"""The server's ends of the persistent control channels (feature ``rekey``, docs/keys.md).

One ``ChannelHub`` on the session table's loop: per session that negotiated ``rekey`` it holds
the key rotation (``protocol.rekey.ServerRekey`` over the data plane's ``KeySchedule``) and the
attached channel, if any. The control server's thread moves the frames; every decision is taken
here, on the table's loop: offer a new epoch when one is due (``tick``, once a second), switch
on the client's acknowledgement, free the session on GOODBYE, push REVOKED when a revocation
ends a session.
"""

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fluxify.errors import RemoteProtocolError, SessionRefusedError
from fluxify.protocol.channel import Frame, FrameType
from fluxify.protocol.keys import SALT_SIZE, KeySchedule
from fluxify.protocol.rekey import DEFAULT_REKEY_INTERVAL_S, ServerRekey
from fluxify.server.sessions import RemovalReason, Session, SessionTable

log = logging.getLogger(__name__)

FrameSink = Callable[[Frame | None], None]  # thread-safe; None closes the channel


@dataclass(eq=False)
class ChannelLink:
    """One attached channel: whose it is and how to send on it (from the table's loop)."""

    session_id: int
    identity: str
    send: FrameSink = field(repr=False)


class ChannelHub:
    """Key rotation and channels of the sessions that negotiated ``rekey``.

    Not thread-safe: every method runs on the session table's loop.
    """

    def __init__(
        self,
        table: SessionTable,
        *,
        interval_s: float = DEFAULT_REKEY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        salts: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._table = table
        self.interval_s = interval_s
        self._clock = clock
        self._salts = salts
        self.rekeys: dict[int, ServerRekey] = {}
        self._links: dict[int, ChannelLink] = {}
        self.goodbyes = 0

    # -- sessions ------------------------------------------------------------------------------

    def add(self, session: Session, keys: KeySchedule) -> None:
        self.rekeys[session.session_id] = ServerRekey(keys, self.interval_s, self._clock())

    def remove(self, session: Session, reason: RemovalReason) -> None:
        """The session left the table: tell its client if revoked, close its channel."""
        self.rekeys.pop(session.session_id, None)
        link = self._links.pop(session.session_id, None)
        if link is None:
            return
        if reason is RemovalReason.REVOKED:
            link.send(Frame(FrameType.REVOKED))
        link.send(None)

    # -- channels (frames from the control thread) --------------------------------------------

    def attach(self, session_id: int, identity: str, send: FrameSink) -> ChannelLink:
        """A channel for ``session_id`` from a client whose certificate says ``identity``."""
        session = self._table.by_id(session_id)
        rekey = self.rekeys.get(session_id)
        if session is None or rekey is None:
            raise SessionRefusedError(
                f"no live session {session_id:#010x} with feature rekey to attach a channel to"
            )
        if session.identity != identity:
            raise SessionRefusedError(
                f"session {session_id:#010x} belongs to {session.identity!r}, not {identity!r}"
            )
        old = self._links.get(session_id)
        if old is not None:
            old.send(None)  # the client reconnected: the old connection is dead to it
        link = ChannelLink(session_id, identity, send)
        self._links[session_id] = link
        send(Frame(FrameType.ATTACHED, rekey.keys.newest))
        if rekey.offered is not None:  # the acknowledgement may have died with the old channel
            send(Frame(FrameType.REKEY, rekey.offered.epoch, rekey.offered.salt))
        return link

    def detach(self, link: ChannelLink) -> None:
        if self._links.get(link.session_id) is link:
            del self._links[link.session_id]

    def on_frame(self, link: ChannelLink, frame: Frame) -> None:
        """A frame from an attached client; RemoteProtocolError for one it may not send."""
        if self._links.get(link.session_id) is not link:
            return  # a replaced channel or an ended session
        rekey = self.rekeys[link.session_id]
        if frame.type is FrameType.REKEY_ACK:
            if rekey.on_ack(frame.value, self._clock()):
                log.info(
                    "session %08x (%s): now under key epoch %d",
                    link.session_id,
                    link.identity,
                    frame.value,
                )
        elif frame.type is FrameType.REKEY_REQUEST:
            rekey.on_request(frame.value)
            self._offer_if_due(link, rekey, self._clock())
        elif frame.type is FrameType.GOODBYE:
            self.goodbyes += 1
            self._table.close(link.session_id, RemovalReason.GOODBYE)
        else:
            raise RemoteProtocolError(f"control channel: a client may not send {frame.type.name}")

    # -- once a second --------------------------------------------------------------------------

    def tick(self) -> None:
        """Retire overlapped epochs and offer new ones where due."""
        now = self._clock()
        for session_id, rekey in self.rekeys.items():
            rekey.on_timer(now)
            link = self._links.get(session_id)
            if link is not None:
                self._offer_if_due(link, rekey, now)

    def _offer_if_due(self, link: ChannelLink, rekey: ServerRekey, now: float) -> None:
        if rekey.due(now):
            offer = rekey.offer(self._salts(SALT_SIZE))
            link.send(Frame(FrameType.REKEY, offer.epoch, offer.salt))
