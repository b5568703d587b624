"""Health of one uplink in one address family, from the outcome of its probes (SPEC §1).

Sans-IO: the adapter (``fluxify.client.health``) asks ``probe_due(now)`` which probe to send,
reports ``on_reply``/``on_send_error``, calls ``handle_timer(now)`` at ``get_timer()``; every
method that can change the state returns whether it did. The original probed every 5 s and gave
up after 3 losses (15 s); the defaults here notice a cut in at most ~2.5 s.
"""

from collections import deque
from dataclasses import dataclass
from enum import Enum

PROBE_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 1.0
FAILURES_BEFORE_DOWN = 3
SUCCESSES_BEFORE_UP = 2  # one lucky echo over a flapping link does not bring it back
LOSS_WINDOW_PROBES = 20
SEQUENCE_MODULUS = 1 << 16  # ICMP echo sequence numbers are 16 bits


class Health(Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class ProbePolicy:
    """How often to probe, how long to wait, and how many outcomes in a row flip the state."""

    interval_s: float = PROBE_INTERVAL_S
    timeout_s: float = PROBE_TIMEOUT_S
    failures_before_down: int = FAILURES_BEFORE_DOWN
    successes_before_up: int = SUCCESSES_BEFORE_UP
    loss_window: int = LOSS_WINDOW_PROBES

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("probe interval and timeout must be positive")
        if min(self.failures_before_down, self.successes_before_up, self.loss_window) < 1:
            raise ValueError("probe thresholds and the loss window must be at least 1")


class ProbeTracker:
    """Probe bookkeeping and the UP/DOWN state of one uplink in one family.

    The zero state is UP with nothing sent: an uplink that has a gateway is presumed alive
    until ``failures_before_down`` probes in a row are lost. A probe is lost when its reply
    does not come within ``timeout_s`` or when it could not be sent; a loss of a probe sent before
    one that was answered counts towards ``loss`` only, not towards going DOWN or staying there.
    Late replies (after the timeout) and unknown sequence numbers are ignored. Not thread-safe.
    """

    def __init__(self, policy: ProbePolicy, now: float) -> None:
        self.policy = policy
        self.state = Health.UP
        self.sent = 0
        self.received = 0
        self.rtt_s: float | None = None  # of the last reply
        self.srtt_s: float | None = None  # smoothed, RFC 6298 gain 1/8
        self._sequence = 0
        self._outstanding: dict[int, float] = {}  # sequence -> sent at
        self._next_probe_at = now
        self._failures = 0
        self._successes = 0
        self._window: deque[bool] = deque(maxlen=policy.loss_window)
        self._newest_success_sent_at = float("-inf")

    @property
    def loss(self) -> float | None:
        """Share of the last ``loss_window`` resolved probes that were lost (None: none yet)."""
        if not self._window:
            return None
        return self._window.count(False) / len(self._window)

    def probe_due(self, now: float) -> int | None:
        """The sequence number of the probe to send now, or None when none is due."""
        if now < self._next_probe_at:
            return None
        # Keep the cadence, but never send a burst to catch up after a stall.
        self._next_probe_at += self.policy.interval_s
        if self._next_probe_at <= now:
            self._next_probe_at = now + self.policy.interval_s
        self._sequence = (self._sequence + 1) % SEQUENCE_MODULUS
        self._outstanding[self._sequence] = now
        self.sent += 1
        return self._sequence

    def on_reply(self, sequence: int, now: float) -> bool:
        sent_at = self._outstanding.pop(sequence, None)
        if sent_at is None:
            return False
        self.received += 1
        self.rtt_s = rtt = max(now - sent_at, 0.0)
        self.srtt_s = rtt if self.srtt_s is None else self.srtt_s + (rtt - self.srtt_s) / 8
        self._newest_success_sent_at = max(self._newest_success_sent_at, sent_at)
        return self._outcome(True)

    def on_send_error(self, sequence: int) -> bool:
        if self._outstanding.pop(sequence, None) is None:
            return False
        return self._outcome(False)

    def handle_timer(self, now: float) -> bool:
        """Count the probes whose reply is overdue as lost."""
        expired = [s for s, at in self._outstanding.items() if now - at >= self.policy.timeout_s]
        changed = False
        for sequence in expired:
            sent_at = self._outstanding.pop(sequence)
            if sent_at < self._newest_success_sent_at:
                # Lost before a later probe got through: stale news, it only counts as loss.
                self._window.append(False)
                continue
            changed |= self._outcome(False)
        return changed

    def get_timer(self) -> float:
        """When ``probe_due`` or ``handle_timer`` next has something to do."""
        deadlines = [at + self.policy.timeout_s for at in self._outstanding.values()]
        return min([self._next_probe_at, *deadlines])

    def _outcome(self, success: bool) -> bool:
        self._window.append(success)
        if success:
            self._failures = 0
            self._successes += 1
            if self.state is Health.DOWN and self._successes >= self.policy.successes_before_up:
                self.state = Health.UP
                return True
        else:
            self._successes = 0
            self._failures += 1
            if self.state is Health.UP and self._failures >= self.policy.failures_before_down:
                self.state = Health.DOWN
                return True
        return False
