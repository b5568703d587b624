"""The load-balance health monitor: ICMP echo probes through each uplink, one state per family.

Each uplink and family gets a raw ICMP socket bound to the interface (``SO_BINDTODEVICE``) and
marked (``SO_MARK``) for that uplink's own routing table, so a probe leaves by its uplink even
after its nexthop was removed from the default route. The decisions are
``fluxify.protocol.health.ProbeTracker``'s; this module only sends, receives and keeps time.
"""

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fluxify.errors import HostError
from fluxify.protocol.health import Health, ProbePolicy, ProbeTracker
from fluxify.protocol.icmp import pack_echo_request, unpack_echo_reply

log = logging.getLogger(__name__)

PAYLOAD = b"fluxify-lb-probe"
RECEIVE_SIZE = 2048
MAX_READS_PER_WAKEUP = 64  # bounded work per readiness callback
MIN_SLEEP_S = 0.005


def family_name(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"


@dataclass(frozen=True)
class ProbeSpec:
    """What to probe: through ``ifname`` (marked ``mark``), ``targets`` of one family in turn."""

    ifname: str
    family: int
    mark: int
    targets: tuple[str, ...]


@dataclass(frozen=True)
class ProbeReport:
    """One uplink and family as the monitor sees it now (for the stats file and logs)."""

    ifname: str
    family: str  # "IPv4" / "IPv6"
    state: str  # "up" / "down"
    rtt_ms: float | None
    srtt_ms: float | None
    loss_pct: float | None
    sent: int
    received: int


class ProbeChannel:
    """One raw ICMP socket and its tracker."""

    def __init__(self, spec: ProbeSpec, policy: ProbePolicy, now: float) -> None:
        if not spec.targets:
            raise HostError(f"No {family_name(spec.family)} probe target for {spec.ifname}.")
        self.spec = spec
        self.v6 = spec.family == socket.AF_INET6
        self.tracker = ProbeTracker(policy, now)
        self.identifier = secrets.randbits(16)
        self.sock = open_probe_socket(spec)
        self._turn = 0

    def send_due(self, now: float) -> bool:
        """Send the probe that is due, if any; whether the state changed (a failed send)."""
        sequence = self.tracker.probe_due(now)
        if sequence is None:
            return False
        target = self.spec.targets[self._turn % len(self.spec.targets)]
        self._turn += 1
        packet = pack_echo_request(self.identifier, sequence, PAYLOAD, v6=self.v6)
        try:
            self.sock.sendto(packet, (target, 0))
        except OSError as exc:
            log.debug("probe via %s to %s not sent: %s", self.spec.ifname, target, exc)
            return self.tracker.on_send_error(sequence)
        return False

    def receive(self, now: float) -> bool:
        """Read every waiting datagram; whether the state changed."""
        changed = False
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                data = self.sock.recv(RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                log.debug("probe socket on %s: %s", self.spec.ifname, exc)
                break
            reply = unpack_echo_reply(data, v6=self.v6)
            if reply is not None and reply[0] == self.identifier:
                changed |= self.tracker.on_reply(reply[1], now)
        return changed

    def report(self) -> ProbeReport:
        t = self.tracker
        return ProbeReport(
            ifname=self.spec.ifname,
            family=family_name(self.spec.family),
            state=t.state.value,
            rtt_ms=_ms(t.rtt_s),
            srtt_ms=_ms(t.srtt_s),
            loss_pct=None if t.loss is None else round(t.loss * 100, 1),
            sent=t.sent,
            received=t.received,
        )

    def close(self) -> None:
        self.sock.close()


class HealthMonitor:
    """Probes every spec until ``stop``; ``changed`` is set whenever some state flips.

    Readers of ``state`` clear ``changed`` before reading, so no flip is missed. Lives on one
    event loop; not thread-safe.
    """

    def __init__(self, specs: Sequence[ProbeSpec], policy: ProbePolicy | None = None) -> None:
        self.specs = tuple(specs)
        self.policy = policy or ProbePolicy()
        self.changed = asyncio.Event()
        self._channels: dict[tuple[str, int], ProbeChannel] = {}

    def state(self, ifname: str, family: int) -> Health:
        channel = self._channels.get((ifname, family))
        return Health.UP if channel is None else channel.tracker.state

    def reports(self) -> list[ProbeReport]:
        return [channel.report() for channel in self._channels.values()]

    def open(self) -> None:
        """Open every probe socket (raises ``HostError`` before anything runs)."""
        now = time.monotonic()
        try:
            for spec in self.specs:
                self._channels[(spec.ifname, spec.family)] = ProbeChannel(spec, self.policy, now)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        if not self._channels:
            self.open()
        channels = list(self._channels.values())
        for channel in channels:
            loop.add_reader(channel.sock.fileno(), self._on_readable, channel)
        log.info("health monitor: probing %d uplink/family pair(s)", len(channels))
        try:
            while not stop.is_set():
                now = time.monotonic()
                for channel in channels:
                    flipped = channel.send_due(now) | channel.tracker.handle_timer(now)
                    if flipped:
                        self._flipped(channel)
                deadline = min(channel.tracker.get_timer() for channel in channels)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(deadline - now, MIN_SLEEP_S))
        finally:
            for channel in channels:
                loop.remove_reader(channel.sock.fileno())
            log.info("health monitor: stopped")

    def _on_readable(self, channel: ProbeChannel) -> None:
        if channel.receive(time.monotonic()):
            self._flipped(channel)

    def _flipped(self, channel: ProbeChannel) -> None:
        report = channel.report()
        level = logging.WARNING if channel.tracker.state is Health.DOWN else logging.INFO
        log.log(
            level,
            "uplink %s %s is %s (loss %s %%, rtt %s ms)",
            report.ifname,
            report.family,
            report.state.upper(),
            report.loss_pct,
            report.srtt_ms,
        )
        self.changed.set()


def open_probe_socket(spec: ProbeSpec) -> socket.socket:
    proto = socket.IPPROTO_ICMPV6 if spec.family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        sock = socket.socket(spec.family, socket.SOCK_RAW, proto)
    except OSError as exc:
        raise HostError(
            f"Cannot open a raw ICMP socket to probe {spec.ifname}: {exc.strerror}. "
            "Load-balance mode needs root (CAP_NET_RAW)."
        ) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, spec.ifname.encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, spec.mark)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise HostError(f"Cannot bind a probe socket to {spec.ifname}: {exc.strerror}.") from exc
    return sock


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
