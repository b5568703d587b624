"""The bonding client: session from the control plane, TUN, one socket per uplink, routing, and
the supervision loop (stats, a new session when the old one is lost). Heartbeats, liveness and
scheduling are the bond engine's (``protocol.bond``), driven by the data plane.

Every host change goes through the journal, so stop, an exception, SIGTERM, or the next start
after a crash restores exactly what was there before.
"""

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from fluxify.client.channel import ClientChannel
from fluxify.client.config import ClientConfig, ServerAddress
from fluxify.client.control import fetch_session
from fluxify.client.dataplane import ClientDataPlane, Tunnel, Uplink
from fluxify.client.uplinks import (
    UplinkPlan,
    apply_default_via_tun,
    apply_uplink_routing,
    open_uplink_socket,
    plan_uplinks,
    resolve_server,
)
from fluxify.errors import ConfigError, ControlError, SessionRefusedError
from fluxify.linux import tun_offload
from fluxify.linux.journal import Journal
from fluxify.linux.netlink import Netlink
from fluxify.linux.statefiles import write_private_json
from fluxify.linux.tun import Tun
from fluxify.pki.client_material import ClientMaterial, load_client_material
from fluxify.protocol.addresses import TUN_MTU, TUN_PREFIX_V4, TUN_PREFIX_V6
from fluxify.protocol.bond import BondConfig, BondEngine, Role
from fluxify.protocol.bondpath import Priority
from fluxify.protocol.control import (
    FEATURE_BOND_V2,
    FEATURE_CSUM_PARTIAL,
    FEATURE_REKEY,
    Extensions,
    SessionRequest,
    SessionResponse,
)
from fluxify.protocol.keys import KeySchedule
from fluxify.protocol.session import DataSession

log = logging.getLogger(__name__)

RENEW_AFTER_DEAD_S = 1.5  # every path dead this long: the server has likely lost our session
RECONNECT_BACKOFF_S = (1.0, 2.0, 4.0, 8.0)
STATS_INTERVAL_S = 1.0
STATS_LOG_INTERVAL_S = 10.0
OFFERED_FEATURES = frozenset({FEATURE_BOND_V2, FEATURE_REKEY})


@dataclass(frozen=True)
class BondingStats:
    """What the client writes to ``<state_dir>/client-stats.json`` every second."""

    session_id: int
    client_ip: str
    client_ip6: str | None
    reconnects: int
    bond_v2: bool
    paths: list[dict[str, object]]
    drops: dict[str, int]
    reorder: dict[str, object]
    efficiency: float | None
    key_epoch: int | None = None  # feature rekey: the epoch we send under
    rekeys: int = 0  # epochs installed in this session


class BondingClient:
    """One run of bonding mode. ``run()`` returns when ``stop`` is set; undo happens on exit."""

    def __init__(self, config: ClientConfig, pki_dir: Path, state_dir: Path) -> None:
        if config.server is None:
            raise ConfigError("-server: bonding mode needs the server's host[:port]")
        if len(config.ifaces) < 2:
            raise ConfigError(
                f"-ifaces: bonding needs at least 2 interfaces (got {len(config.ifaces)})"
            )
        self.config = config
        self.server: ServerAddress = config.server
        self.pki_dir = pki_dir
        self.state_dir = state_dir
        self.reconnects = 0
        self.dataplane: ClientDataPlane | None = None  # set while running, for views (TUI)
        self._tun: Tun | None = None
        self._sockets: list[socket.socket] = []
        self._paths: list[tuple[str, Priority]] = []  # label and priority of engine path i
        self._material: ClientMaterial | None = None
        self.channel: ClientChannel | None = None  # feature rekey: the session's control channel
        self._channel_task: asyncio.Task[None] | None = None
        self.revoked: str | None = None  # the server's revocation, as the sentence to exit with
        self._stop: asyncio.Event | None = None

    async def run(self, stop: asyncio.Event) -> None:
        material = load_client_material(self.pki_dir, self.config.client_name)
        self._material = material
        self._stop = stop
        server_ip = resolve_server(self.server.host)
        family = socket.AF_INET6 if ":" in server_ip else socket.AF_INET
        self.state_dir.mkdir(parents=True, exist_ok=True)
        journal = Journal("client", state_dir=self.state_dir)
        repaired = journal.repair()
        if repaired:
            log.warning("undid %d host changes left by a previous run that did not stop", repaired)
        loop = asyncio.get_running_loop()
        with journal:
            try:
                plans = await asyncio.to_thread(self._plan, journal, family)
                await asyncio.to_thread(apply_uplink_routing, journal, plans, server_ip)
                response = await self._fetch(material)
                uplinks = self._open_uplinks(plans, family)
                tunnel = self._tunnel(response, server_ip)
                await asyncio.to_thread(self._bring_up_tun, journal, response)
                assert self._tun is not None
                self.dataplane = dataplane = ClientDataPlane(self._tun.fd, uplinks, tunnel)
                dataplane.attach(loop)
                try:
                    dataplane.send_handshakes()
                    log.info(
                        "bonding: session %08x, %s over %s",
                        response.session_id,
                        response.client_ip,
                        ", ".join(p.ifname for p in plans),
                    )
                    await self._supervise(dataplane, material, server_ip, response, stop)
                finally:
                    await self._end_channel(goodbye=self.revoked is None)
                    dataplane.detach(loop)
                    self.dataplane = None
            finally:
                self._close()
        log.info("bonding: stopped; host routes, rules and sysctls restored")
        if self.revoked is not None:
            raise SessionRefusedError(self.revoked)

    def _plan(self, journal: Journal, family: int) -> list[UplinkPlan]:
        return plan_uplinks(
            journal.netlink,
            self.config.ifaces,
            family,
            gateways=self.config.gateways,
            source_ips=self.config.source_ips,
        )

    async def _fetch(self, material: ClientMaterial) -> SessionResponse:
        offered = OFFERED_FEATURES if self.config.protocol == "v2" else frozenset()
        if offered and tun_offload.open_flags():  # the TUN will have a vnet header
            offered |= {FEATURE_CSUM_PARTIAL}
        request = SessionRequest(
            client_name=material.common_name,
            extensions=Extensions(features=offered) if offered else None,
        )
        return await fetch_session(self.server, material, request)

    def _tunnel(self, response: SessionResponse, server_ip: str) -> Tunnel:
        accepted = response.extensions.features if response.extensions else frozenset()
        v2 = FEATURE_BOND_V2 in accepted
        loop = asyncio.get_running_loop()
        now = loop.time()
        keys = None
        if v2 and FEATURE_REKEY in accepted:
            keys = KeySchedule(response.session_key, response.session_id, client=True)
            self._start_channel(response.session_id, keys)
        elif self._channel_task is not None:
            self._channel_task.cancel()
            self.channel = self._channel_task = None
        engine: BondEngine[int] = BondEngine(
            DataSession(response.session_id, response.session_key, numbered_control=v2, keys=keys),
            BondConfig(Role.CLIENT, v2, wall_offset_ns=time.time_ns() - int(now * 1e9)),
            now,
        )
        for index, (label, priority) in enumerate(self._paths):
            engine.add_path(index, label, now, priority)
        return Tunnel(
            engine=engine,
            server=(server_ip, response.udp_port),
            inner_v4=response.client_ip.packed,
            inner_v6=response.client_ip6.packed if response.client_ip6 else b"",
            csum_partial=FEATURE_CSUM_PARTIAL in accepted,
        )

    def _start_channel(self, session_id: int, keys: KeySchedule) -> None:
        assert self._material is not None
        if self._channel_task is not None:
            self._channel_task.cancel()  # the old session is gone: no goodbye for it
        self.channel = ClientChannel(
            self.server,
            self._material,
            session_id,
            keys,
            self.config.rekey_interval_s,
            on_revoked=self._on_revoked,
        )
        self._channel_task = asyncio.create_task(self.channel.run(), name="control channel")

    def _on_revoked(self, message: str) -> None:
        self.revoked = message
        if self._stop is not None:
            self._stop.set()

    async def _end_channel(self, *, goodbye: bool) -> None:
        channel, task = self.channel, self._channel_task
        self.channel = self._channel_task = None
        if channel is None or task is None:
            return
        if goodbye:
            await channel.goodbye()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _bring_up_tun(self, journal: Journal, response: SessionResponse) -> None:
        self._tun = tun = Tun.open("", extra_flags=tun_offload.open_flags())
        netlink = journal.netlink
        netlink.add_address(tun.name, f"{response.client_ip}/{TUN_PREFIX_V4}")
        if response.client_ip6 is not None:
            netlink.add_address(tun.name, f"{response.client_ip6}/{TUN_PREFIX_V6}", nodad=True)
        netlink.set_link(tun.name, up=True, mtu=TUN_MTU)
        # The device and its addresses vanish with the fd; the routes are journaled so that a
        # crash between here and the fd closing still gets them removed.
        apply_default_via_tun(journal, tun.name, ipv6=response.client_ip6 is not None)

    def _open_uplinks(self, plans: Sequence[UplinkPlan], family: int) -> list[Uplink]:
        """One socket per uplink (or ``-conns`` sockets spread over them); path i = socket i."""
        count = len(plans) if self.config.connections <= 0 else max(self.config.connections, 1)
        count = max(count, len(plans))
        backup = set(self.config.backup_ifaces)
        uplinks = []
        self._paths = []
        for i in range(count):
            plan = plans[i % len(plans)]
            sock = open_uplink_socket(plan, family)
            self._sockets.append(sock)
            label = plan.ifname if count == len(plans) else f"{plan.ifname}#{i // len(plans)}"
            uplinks.append(Uplink(label, sock))
            priority = Priority.BACKUP if plan.ifname in backup else Priority.PRIMARY
            self._paths.append((label, priority))
        return uplinks

    async def _supervise(
        self,
        dataplane: ClientDataPlane,
        material: ClientMaterial,
        server_ip: str,
        response: SessionResponse,
        stop: asyncio.Event,
    ) -> None:
        all_dead_since: float | None = None
        next_log = time.monotonic()
        failures = 0
        while not stop.is_set():
            now = time.monotonic()
            if not dataplane.all_dead:
                all_dead_since, failures = None, 0
            elif all_dead_since is None:
                all_dead_since = now
                log.warning("every uplink is silent: the server may have lost our session")
            elif now - all_dead_since >= RENEW_AFTER_DEAD_S:
                renewed = await self._renew(dataplane, material, server_ip, response, failures)
                if renewed is None:
                    failures += 1
                else:
                    response, all_dead_since, failures = renewed, None, 0
            if self.channel is not None:
                self.channel.tick()
            self._write_stats(dataplane, response)
            if now >= next_log:
                next_log = now + STATS_LOG_INTERVAL_S
                _log_paths(dataplane)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=STATS_INTERVAL_S)

    async def _renew(
        self,
        dataplane: ClientDataPlane,
        material: ClientMaterial,
        server_ip: str,
        old: SessionResponse,
        failures: int,
    ) -> SessionResponse | None:
        """A new session, or None after a failure (and a back-off pause)."""
        try:
            response = await self._fetch(material)
        except ControlError as exc:
            delay = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]
            log.warning("new session failed (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            return None
        self.reconnects += 1
        if (response.client_ip, response.client_ip6) != (old.client_ip, old.client_ip6):
            await asyncio.to_thread(self._readdress, old, response)
        dataplane.use_tunnel(self._tunnel(response, server_ip))
        log.info(
            "bonding: new session %08x (%s), reconnect #%d",
            response.session_id,
            response.client_ip,
            self.reconnects,
        )
        return response

    def _readdress(self, old: SessionResponse, new: SessionResponse) -> None:
        assert self._tun is not None
        with Netlink() as netlink:
            pairs: list[tuple[IPv4Address | IPv6Address | None, int]] = [
                (old.client_ip, TUN_PREFIX_V4),
                (old.client_ip6, TUN_PREFIX_V6),
            ]
            for address, prefix in pairs:
                if address is not None:
                    netlink.delete_address(self._tun.name, f"{address}/{prefix}")
            netlink.add_address(self._tun.name, f"{new.client_ip}/{TUN_PREFIX_V4}")
            if new.client_ip6 is not None:
                netlink.add_address(self._tun.name, f"{new.client_ip6}/{TUN_PREFIX_V6}", nodad=True)

    def _write_stats(self, dataplane: ClientDataPlane, response: SessionResponse) -> None:
        snapshot = dataplane.snapshot()
        stats = BondingStats(
            session_id=response.session_id,
            client_ip=str(response.client_ip),
            client_ip6=str(response.client_ip6) if response.client_ip6 else None,
            reconnects=self.reconnects,
            bond_v2=dataplane.engine.v2,
            paths=[asdict(p) for p in snapshot.paths],
            drops=dataplane.drops.snapshot(),
            reorder=asdict(snapshot.reorder),
            efficiency=snapshot.efficiency,
            key_epoch=keys.send.epoch if (keys := dataplane.engine.codec.keys) else None,
            rekeys=self.channel.rekey.rekeys if self.channel is not None else 0,
        )
        write_private_json(self.state_dir / "client-stats.json", asdict(stats))

    def _close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        if self._tun is not None:
            os.close(self._tun.fd)
            self._tun = None


def _log_paths(dataplane: ClientDataPlane) -> None:
    for path in dataplane.snapshot().paths:
        log.info(
            "uplink %s (%s): %s, rtt %s, model %.1f Mbit/s, loss %.2f %%, share %.0f %%, "
            "tx %d pkts / %d B, rx %d pkts / %d B",
            path.label,
            path.priority,
            "alive" if path.alive else "DEAD",
            f"{path.rtt_ms:.1f} ms" if path.rtt_ms is not None else "?",
            path.rate_mbit,
            path.loss * 100,
            path.share * 100,
            path.tx_packets,
            path.tx_bytes,
            path.rx_packets,
            path.rx_bytes,
        )
    drops = dataplane.drops.snapshot()
    if drops:
        log.info("drops: %s", drops)


async def run_bonding(config: ClientConfig, pki_dir: Path, state_dir: Path) -> None:
    """Run until SIGINT/SIGTERM; every exit path restores the host."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await BondingClient(config, pki_dir, state_dir).run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
