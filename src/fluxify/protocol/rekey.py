"""When each end moves its session to the next key epoch (feature ``rekey``, docs/keys.md).

The server leads: ``ServerRekey`` offers epoch ``n + 1`` (it accepts it at once), the client
installs it and sends under it at once and acknowledges, and the server sends under it from the
acknowledgement on. Each end keeps accepting epoch ``n`` for an overlap after the peer switched,
then retires it, so nothing in flight is lost. A rekey is due after ``interval_s`` under one
epoch or when a send key carried ``REKEY_AFTER_MESSAGES``; the client asks for one with a
REKEY_REQUEST when its own key is due. Pure: ``now`` (seconds) and the salt come in as arguments.
"""

import math
from dataclasses import dataclass

from fluxify.protocol.keys import KeySchedule

DEFAULT_REKEY_INTERVAL_S = 3600.0
REKEY_OVERLAP_S = 10.0  # far above any path's delay; capped at half the interval
_INF = math.inf


def overlap_for(interval_s: float) -> float:
    return min(REKEY_OVERLAP_S, interval_s / 2)


@dataclass(frozen=True)
class RekeyOffer:
    epoch: int
    salt: bytes

    def __repr__(self) -> str:
        return f"RekeyOffer(epoch={self.epoch})"


class ServerRekey:
    """The server's side of one session's key epochs. Not thread-safe: the table's loop."""

    def __init__(self, keys: KeySchedule, interval_s: float, now: float) -> None:
        self.keys = keys
        self.interval_s = interval_s
        self.overlap_s = overlap_for(interval_s)
        self.epoch_started = now
        self.offered: RekeyOffer | None = None  # sent, not yet acknowledged
        self.requested = False
        self._retiring: int | None = None
        self._retire_at = _INF
        self.rekeys = 0  # epochs completed (acknowledged)

    def due(self, now: float) -> bool:
        """A new epoch should be offered now (none is pending, the last overlap is over)."""
        if self.offered is not None or self._retiring is not None:
            return False
        return (
            self.requested or self.keys.wants_rekey or now - self.epoch_started >= self.interval_s
        )

    def offer(self, salt: bytes) -> RekeyOffer:
        """Install the next epoch for receiving; the REKEY to send is returned."""
        epoch = self.keys.newest + 1
        self.keys.install(epoch, salt)
        self.offered = RekeyOffer(epoch, salt)
        self.requested = False
        return self.offered

    def on_ack(self, epoch: int, now: float) -> bool:
        """The client sends under ``epoch``: so do we; the old epoch is retired after the
        overlap. False (nothing changes) for an ack of anything but the pending offer."""
        offered = self.offered
        if offered is None or offered.epoch != epoch or not self.keys.switch_send(epoch):
            return False
        self.offered = None
        self.epoch_started = now
        self._retiring = epoch - 1
        self._retire_at = now + self.overlap_s
        self.rekeys += 1
        return True

    def on_request(self, epoch: int) -> None:
        """The client's send key of ``epoch`` is due; a stale request is ignored."""
        if epoch == self.keys.newest:
            self.requested = True

    def on_timer(self, now: float) -> None:
        if self._retiring is not None and now >= self._retire_at:
            self.keys.retire(self._retiring)
            self._retiring, self._retire_at = None, _INF

    def next_deadline(self) -> float:
        if self._retiring is not None:
            return self._retire_at
        if self.offered is not None:
            return _INF
        return self.epoch_started + self.interval_s


class ClientRekey:
    """The client's side: installs offered epochs, retires old ones, asks when its key is due."""

    def __init__(self, keys: KeySchedule, interval_s: float, now: float) -> None:
        self.keys = keys
        self.interval_s = interval_s
        self.overlap_s = overlap_for(interval_s)
        self.epoch_started = now
        self._requested_for = -1  # the epoch a request was sent for
        self._retiring: int | None = None
        self._retire_at = _INF
        self.rekeys = 0

    def on_rekey(self, offer: RekeyOffer, now: float) -> int:
        """Install (once) the offered epoch and send under it; the epoch to acknowledge.

        The same offer again (sent once more after a reconnect of the channel) is only
        acknowledged again. Anything else out of order raises RemoteProtocolError."""
        if offer.epoch == self.keys.newest and self.keys.send.epoch == offer.epoch:
            return offer.epoch
        self.keys.install(offer.epoch, offer.salt)
        self.epoch_started = now
        self._retiring = offer.epoch - 1
        self._retire_at = _INF  # counted from the first datagram the server seals under it
        self.rekeys += 1
        return offer.epoch

    def request_again(self) -> int | None:
        """The channel (re)attached: the epoch of a REKEY_REQUEST to send once more, or None.

        A request made under the epoch we still send under may have died with the old
        connection, or found none; it is not asked for again otherwise (once per epoch), and a
        key at its message limit would stop sending until the server's own interval."""
        epoch = self.keys.send.epoch
        return epoch if self._requested_for == epoch else None

    def on_timer(self, now: float) -> int | None:
        """Retire what is due; the epoch to ask a rekey for (REKEY_REQUEST), or None."""
        keys = self.keys
        if self._retiring is not None:
            if self._retire_at == _INF and keys.received_under(keys.newest):
                self._retire_at = now + self.overlap_s  # the server switched
            if now >= self._retire_at:
                keys.retire(self._retiring)
                self._retiring, self._retire_at = None, _INF
        epoch = keys.send.epoch
        if self._requested_for != epoch and (
            keys.wants_rekey or now - self.epoch_started >= self.interval_s
        ):
            self._requested_for = epoch
            return epoch
        return None
