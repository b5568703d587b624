"""Load-balance mode (SPEC §1): no server, no TUN; a multipath default route per family over the
uplinks that answer their probes, masquerade out of each, and live stats.

Every host change goes through the journal (owner ``client``, so a bonding client and a load
balancer never run at once), so stop, SIGTERM, an exception, or the next start after a crash
restores exactly the routes, rules, sysctls and nftables that were there before. The journal
gets one record per route change, in order, so undo walks back through every multipath route
to the host's own.
"""

import asyncio
import contextlib
import logging
import signal
import socket
import time
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from fluxify.client.config import ClientConfig
from fluxify.client.health import HealthMonitor, ProbeSpec, family_name
from fluxify.client.lbstats import STATS_FILE, STATS_INTERVAL_S, LoadBalanceStats
from fluxify.client.lbuplinks import (
    Discovery,
    describe,
    discover_uplinks,
    multipath_default,
    prepare_host,
)
from fluxify.errors import ConfigError, HostError
from fluxify.linux.journal import Journal
from fluxify.linux.routing import Route
from fluxify.protocol.health import Health, ProbePolicy

log = logging.getLogger(__name__)

JOURNAL_OWNER = "client"
RESYNC_INTERVAL_S = 5.0
# The original's targets (reference §4.6), plus a second operator so one outage is not all.
DEFAULT_PROBE_TARGETS = (
    ip_address("1.1.1.1"),
    ip_address("8.8.8.8"),
    ip_address("2606:4700:4700::1111"),
    ip_address("2001:4860:4860::8888"),
)


class LoadBalancer:
    """One run of load-balance mode. ``run()`` returns when ``stop`` is set; undo happens on exit.

    ``routes`` maps "IPv4"/"IPv6" to the interfaces of the installed multipath route (for views).
    """

    def __init__(
        self,
        config: ClientConfig,
        state_dir: Path,
        *,
        policy: ProbePolicy | None = None,
    ) -> None:
        if len(config.ifaces) < 2:
            raise ConfigError(
                f"-ifaces: load-balance needs at least 2 interfaces (got {len(config.ifaces)})"
            )
        self.config = config
        self.state_dir = state_dir
        self.policy = policy or ProbePolicy()
        self.routes: dict[str, list[str]] = {}
        self._installed: dict[int, Route] = {}

    async def run(self, stop: asyncio.Event) -> None:
        stats_path = self.state_dir / STATS_FILE
        journal = Journal(JOURNAL_OWNER, state_dir=self.state_dir)
        with journal:
            repaired = journal.repair()
            if repaired:
                log.warning(
                    "undid %d host changes left by a previous run that did not stop", repaired
                )
            found = discover_uplinks(
                journal.netlink,
                self.config.ifaces,
                gateways=self.config.gateways,
                weights=self.config.weights,
            )
            for reason in found.skipped:
                log.warning("skipping %s", reason)
            monitor = HealthMonitor(self._probe_specs(found), self.policy)
            monitor.open()  # before any host change: no root, no change
            try:
                prepare_host(journal, found.uplinks, found.families)
                self._update_routes(journal, found, monitor)
                log.info(
                    "load-balance: %s over %s",
                    "/".join(family_name(f) for f in found.families),
                    ", ".join(u.ifname for u in found.uplinks),
                )
                stats = LoadBalanceStats(found.uplinks, found.skipped, stats_path)
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(monitor.run(stop), name="health-monitor")
                    tasks.create_task(
                        self._follow_health(journal, found, monitor, stop), name="route-updater"
                    )
                    tasks.create_task(self._report(stats, monitor, stop), name="stats")
            finally:
                monitor.close()
                stats_path.unlink(missing_ok=True)
        log.info("load-balance: stopped; default routes, rules, sysctls and nftables restored")

    def _probe_specs(self, found: Discovery) -> list[ProbeSpec]:
        targets = self.config.probe_targets or DEFAULT_PROBE_TARGETS
        specs = []
        for family in found.families:
            mine = tuple(str(t) for t in targets if _family_of(t) == family)
            if not mine:
                raise ConfigError(
                    f"-probe: no {family_name(family)} target given, but {family_name(family)} "
                    "is balanced; add one (e.g. -probe 1.1.1.1,2606:4700:4700::1111)"
                )
            for uplink in found.uplinks:
                if uplink.gateway(family) is not None:
                    specs.append(ProbeSpec(uplink.ifname, family, uplink.mark, mine))
        return specs

    async def _follow_health(
        self, journal: Journal, found: Discovery, monitor: HealthMonitor, stop: asyncio.Event
    ) -> None:
        """Re-render the routes on every health flip, and every ``RESYNC_INTERVAL_S`` anyway."""
        log.info("route updater: started")
        while not stop.is_set():
            waiter = asyncio.ensure_future(monitor.changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    {waiter, stopper},
                    timeout=RESYNC_INTERVAL_S,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                waiter.cancel()
                stopper.cancel()
            if stop.is_set():
                break
            flipped = monitor.changed.is_set()
            monitor.changed.clear()
            try:
                # Netlink runs on its own thread; calling it here keeps every journal write on
                # this one task, in order (the journal is not thread-safe).
                self._update_routes(journal, found, monitor, check_kernel=not flipped)
            except HostError as exc:
                log.error("could not update the default routes (retrying): %s", exc)
        log.info("route updater: stopped")

    def _update_routes(
        self,
        journal: Journal,
        found: Discovery,
        monitor: HealthMonitor,
        *,
        check_kernel: bool = False,
    ) -> None:
        """Install each family's route unless it is already in place.

        ``check_kernel`` also compares with the kernel's table: someone (a DHCP client's
        ``ip route replace default``) may have overwritten our route; we put it back, and the
        journal then restores theirs on stop.
        """
        for family in found.families:
            alive = [monitor.state(u.ifname, family) is Health.UP for u in found.uplinks]
            route = multipath_default(family, found.uplinks, alive)
            if self._installed.get(family) == route and not (
                check_kernel and not _in_kernel(journal, route)
            ):
                continue
            if self._installed.get(family) == route:
                log.warning(
                    "our %s default route was changed by someone else; restoring it",
                    family_name(family),
                )
            elif not any(alive):
                log.warning(
                    "no uplink answers %s probes; routing over all of them", family_name(family)
                )
            journal.replace_route(route)
            self._installed[family] = route
            self.routes[family_name(family)] = [hop.ifname or "" for hop in route.nexthops]
            log.info("%s default route: %s", family_name(family), describe(route))

    async def _report(
        self, stats: LoadBalanceStats, monitor: HealthMonitor, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            try:
                stats.sample(monitor, dict(self.routes), time.monotonic())
            except OSError as exc:  # a full or read-only state dir must not stop balancing
                log.error("cannot write %s: %s", stats.path, exc.strerror or exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATS_INTERVAL_S)


def _in_kernel(journal: Journal, route: Route) -> bool:
    """Whether the kernel's route at ``route``'s place has ``route``'s nexthops."""
    return any(_hops(present) == _hops(route) for present in journal.netlink.replaced_by(route))


def _hops(route: Route) -> set[tuple[str | None, str | None, int]]:
    if route.nexthops and len(route.nexthops) > 1:
        return {(h.gateway, h.ifname, h.weight) for h in route.nexthops}
    # The kernel lists a one-nexthop route as a plain route, without its weight.
    hop = route.nexthops[0] if route.nexthops else None
    return {(hop.gateway, hop.ifname, 1) if hop else (route.gateway, route.ifname, 1)}


def _family_of(address: IPv4Address | IPv6Address) -> int:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


async def run_load_balance(config: ClientConfig, state_dir: Path) -> None:
    """Run until SIGINT/SIGTERM; every exit path restores the host."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await LoadBalancer(config, state_dir).run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
