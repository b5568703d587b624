"""The bonding server: PKI, TUN, forwarding and NAT, the control plane and the data plane.

Every host change (TUN routes, sysctls, the nftables table) goes through the journal, so a clean
stop, an exception, or the next start after a crash leaves the host as it was.
"""

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path

from fluxify.errors import HostError
from fluxify.linux import nftables, tun_offload
from fluxify.linux.journal import Journal
from fluxify.linux.limits import raise_open_file_limit
from fluxify.linux.statefiles import ensure_private_dir, write_private_json
from fluxify.linux.tun import Tun
from fluxify.pki.authority import ensure_server_pki
from fluxify.pki.revocation import RevocationWatcher
from fluxify.pki.tls import server_context
from fluxify.protocol.addresses import (
    SERVER_TUN_V4,
    SERVER_TUN_V6,
    TUN_MTU,
    TUN_PREFIX_V4,
    TUN_PREFIX_V6,
)
from fluxify.protocol.control import FEATURE_BOND_V2, FEATURE_CSUM_PARTIAL, FEATURE_REKEY
from fluxify.protocol.keys import KeySchedule
from fluxify.server.channels import ChannelHub
from fluxify.server.config import ServerConfig
from fluxify.server.control import ControlServer
from fluxify.server.dataplane import ServerDataPlane
from fluxify.server.path_filter import PathFilter
from fluxify.server.sessions import RemovalReason, Session, SessionTable
from fluxify.server.udp_socket import open_data_socket

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 1.0  # sweep, revocations, stats
DROP_LOG_INTERVAL_S = 30.0
HOUSEKEEPING_ERROR_LOG_INTERVAL_S = 30.0  # one warning per interval, however often it fails
ACCEPTED_FEATURES = frozenset({FEATURE_BOND_V2, FEATURE_REKEY})
FORWARDING_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")


class BondingServer:
    """One run of the server. ``run(stop)`` returns when ``stop`` is set, the host restored."""

    def __init__(self, config: ServerConfig, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.table = SessionTable()
        self.dataplane: ServerDataPlane | None = None
        self.control: ControlServer | None = None
        self.revocation: RevocationWatcher | None = None
        self.channels = ChannelHub(self.table, interval_s=config.rekey_interval_s)
        self.path_filter: PathFilter | None = None  # None: the kernel flood filter is off
        self._kernel_filter = False  # whether our table holds the flood filter
        self._revocation_seen = 0

    async def run(self, stop: asyncio.Event) -> None:
        raise_open_file_limit()
        setup = ensure_server_pki(
            self.config.pki_dir, self.config.hosts, regenerate=self.config.regenerate
        )
        context = server_context(setup.layout)
        self.revocation = revocation = RevocationWatcher(setup.layout)
        ensure_private_dir(self.state_dir)  # identities, addresses, session ids: not for others
        journal = Journal("server", state_dir=self.state_dir)
        repaired = journal.repair()
        if repaired:
            log.warning("undid %d host changes left by a previous run that did not stop", repaired)
        with journal:
            tun = await asyncio.to_thread(self._bring_up_host, journal)
            sock = open_data_socket(self.config.udp_port)
            loop = asyncio.get_running_loop()
            filter_task: asyncio.Task[None] | None = None
            try:
                self.dataplane = dataplane = ServerDataPlane(
                    tun.fd, sock, on_expire=self._expired, on_paths_changed=self._paths_changed
                )
                if self._kernel_filter:
                    self.path_filter = PathFilter(dataplane.confirmed_paths)
                    filter_task = asyncio.create_task(self.path_filter.run())
                self.table.on_opened(self._opened)
                self.table.on_removed(self._removed)
                dataplane.attach(loop)
                self.control = ControlServer(
                    context,
                    self.table,
                    self.config.udp_port,
                    accepted_features=self._accepted_features(tun.fd),
                    is_revoked=revocation.is_revoked,
                    channels=self.channels if self.config.protocol == "v2" else None,
                )
                await self.control.start(None, self.config.control_port)
                log.info(
                    "server: TUN %s, UDP port %d, control port %d",
                    tun.name,
                    self.config.udp_port,
                    self.config.control_port,
                )
                try:
                    await self._housekeeping(dataplane, stop)
                finally:
                    await self.control.close()
                    dataplane.detach(loop)
            finally:
                if filter_task is not None:
                    filter_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await filter_task
                sock.close()
                os.close(tun.fd)
        log.info("server: stopped; NAT table, sysctls and TUN removed")

    def _accepted_features(self, tun_fd: int) -> frozenset[str]:
        """What this server agrees to: none for ``-protocol v1``; ``csum-partial`` only with a
        vnet TUN (one that can take a partial checksum with NEEDS_CSUM)."""
        if self.config.protocol != "v2":
            return frozenset()
        if tun_offload.has_vnet_header(tun_fd):
            return ACCEPTED_FEATURES | {FEATURE_CSUM_PARTIAL}
        return ACCEPTED_FEATURES

    def _bring_up_host(self, journal: Journal) -> Tun:
        tun = Tun.open(self.config.tun_name, extra_flags=tun_offload.open_flags())
        try:
            netlink = journal.netlink
            netlink.add_address(tun.name, f"{SERVER_TUN_V4}/{TUN_PREFIX_V4}")
            netlink.add_address(tun.name, f"{SERVER_TUN_V6}/{TUN_PREFIX_V6}", nodad=True)
            netlink.set_link(tun.name, up=True, mtu=TUN_MTU)
            for name in FORWARDING_SYSCTLS:
                journal.set_sysctl(name, "1")
            self._apply_nftables(journal, tun.name)
        except BaseException:
            os.close(tun.fd)
            raise
        return tun

    def _apply_nftables(self, journal: Journal, tun: str) -> None:
        """The table with the kernel flood filter; without it (logged) when nft refuses it."""
        flood = nftables.FloodFilter(self.config.udp_port, self.config.control_port, tun)
        try:
            journal.apply_nftables(nftables.server_ruleset(tun, flood_filter=flood))
        except HostError as exc:
            log.warning(
                "kernel flood filter off (%s); the server goes on with its own checks alone", exc
            )
            journal.apply_nftables(nftables.server_ruleset(tun))
            return
        self._kernel_filter = True

    def _paths_changed(self) -> None:
        if self.path_filter is not None:
            self.path_filter.changed()

    def _opened(self, session: Session) -> None:
        assert self.dataplane is not None
        keys = None
        if FEATURE_REKEY in session.features:
            keys = KeySchedule(session.key, session.session_id, client=False)
            self.channels.add(session, keys)
        self.dataplane.install(
            session.session_id,
            session.key,
            session.identity,
            session.client_ip,
            session.client_ip6,
            v2=FEATURE_BOND_V2 in session.features,
            keys=keys,
            csum_partial=FEATURE_CSUM_PARTIAL in session.features,
        )

    def _removed(self, session: Session, reason: RemovalReason) -> None:
        assert self.dataplane is not None
        self.dataplane.remove(session.session_id)
        self.channels.remove(session, reason)
        log.info("session %08x (%s) ended: %s", session.session_id, session.identity, reason.value)

    def _expired(self, session_id: int) -> None:
        self.table.close(session_id, RemovalReason.EXPIRED)

    async def _housekeeping(self, dataplane: ServerDataPlane, stop: asyncio.Event) -> None:
        next_drop_log = time.monotonic() + DROP_LOG_INTERVAL_S
        logged_drops: dict[str, int] = {}
        next_error_log = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=HOUSEKEEPING_INTERVAL_S)
            try:
                dataplane.sweep()
                self.end_revoked_sessions()
                self.channels.tick()
                self._write_stats(dataplane)
            except Exception as exc:
                # EMFILE, a full disk, an unreadable CRL: the tunnel keeps running; say so
                # once per interval, never once a second.
                now = time.monotonic()
                if now >= next_error_log:
                    next_error_log = now + HOUSEKEEPING_ERROR_LOG_INTERVAL_S
                    log.warning("housekeeping failed (the server keeps running): %r", exc)
            now = time.monotonic()
            if now >= next_drop_log:
                next_drop_log = now + DROP_LOG_INTERVAL_S
                drops = self.drops(dataplane)
                if drops != logged_drops:  # rate-limited summary, never per packet
                    log.info("drops so far: %s", drops)
                    logged_drops = drops

    def end_revoked_sessions(self) -> list[Session]:
        """When the revocation list changed, end the live sessions of revoked certificates."""
        if self.revocation is None:
            return []
        self.revocation.refresh()
        if self.revocation.generation == self._revocation_seen:
            return []
        self._revocation_seen = self.revocation.generation
        return self.table.close_revoked(self.revocation.serials)

    def drops(self, dataplane: ServerDataPlane) -> dict[str, int]:
        """Drops by reason: the data plane's, and the kernel flood filter's as last read."""
        drops = dataplane.drops.snapshot()
        if self.path_filter is not None:
            drops.update(self.path_filter.drops())
        return drops

    @staticmethod
    def _key_epoch(dataplane: ServerDataPlane, session_id: int) -> int | None:
        live = dataplane.sessions.get(session_id)
        keys = live.engine.codec.keys if live is not None else None
        return keys.send.epoch if keys is not None else None

    def _write_stats(self, dataplane: ServerDataPlane) -> None:
        """``<state_dir>/server-stats.json``: sessions, their paths, drops (for tools and tests)."""
        sessions = []
        for s in dataplane.snapshot():
            sessions.append(
                {
                    "session_id": s.session_id,
                    "identity": s.identity,
                    "inner_v4": s.inner_v4,
                    "idle_s": s.idle_s,
                    "bond_v2": s.bond_v2,
                    "paths": [asdict(p) for p in s.bond.paths],
                    "reorder": asdict(s.bond.reorder),
                    "efficiency": s.bond.efficiency,
                    "key_epoch": self._key_epoch(dataplane, s.session_id),
                    "rekeys": rekey.rekeys
                    if (rekey := self.channels.rekeys.get(s.session_id))
                    else 0,
                }
            )
        stats = {
            "sessions": sessions,
            "drops": self.drops(dataplane),
            "goodbyes": self.channels.goodbyes,
            "tun_packets_read": dataplane.tun_packets_read,
            "tun_packets_written": dataplane.tun.written,
        }
        write_private_json(self.state_dir / "server-stats.json", stats)


async def run_server(config: ServerConfig, state_dir: Path) -> None:
    """Run until SIGINT/SIGTERM; every exit path restores the host."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await BondingServer(config, state_dir).run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
