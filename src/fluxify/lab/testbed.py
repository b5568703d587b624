"""Build, drive and always tear down the namespace test bed planned in ``lab.topology``.

Nothing here touches the root namespace: every link is created inside the bed's namespaces.
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fluxify.errors import HostError
from fluxify.lab import delay
from fluxify.lab.topology import Topology, Uplink, plan
from fluxify.linux import nftables, sysctl

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
ISP_NAT_TABLE = "isp_nat"
LOSS_TABLE = "lab_loss"  # apart from the runners' own "fluxify" table in the same namespace


@dataclass(frozen=True)
class LinkCounters:
    """Byte and packet counters of one interface, as the kernel counts them."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


@dataclass
class Testbed:
    """A built test bed: its ``topology`` plus the processes started in it.

    Use ``testbed()`` to get one; every helper runs inside the bed's own namespaces.
    """

    __test__ = False  # not a pytest test class, despite the name

    topology: Topology
    processes: list["subprocess.Popen[Any]"] = field(default_factory=list)
    extra_clients: list[str] = field(default_factory=list)
    delays: dict[tuple[int, str], delay.DelayProcess] = field(default_factory=dict)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of this bed, the extra client homes included."""
        return (*self.topology.namespaces, *self.extra_clients)

    def add_client_home(self) -> str:
        """Another client namespace (``<name>-cliK``) behind the same ISPs, for multi-client tests.

        It gets ``wan1..wanN`` like the first client, on its own LAN per ISP
        (192.168.(10K+N).0/24, fd10:(10K+N)::/64), with the same metrics.
        """
        index = len(self.extra_clients) + 2
        netns = f"{self.topology.name}-cli{index}"
        _run(["ip", "netns", "add", netns])
        self.extra_clients.append(netns)
        _ip(netns, "link set lo up")
        for u in self.topology.uplinks:
            lan = f"lan{index}"
            subnet = 10 * index + u.number
            _ip(netns, f"link add {u.ifname} type veth peer name {lan} netns {u.isp_ns}")
            _address(netns, u.ifname, f"192.168.{subnet}.2/24", f"fd10:{subnet:x}::2/64")
            _address(u.isp_ns, lan, f"192.168.{subnet}.1/24", f"fd10:{subnet:x}::1/64")
            _ip(netns, f"route add default via 192.168.{subnet}.1 dev {u.ifname} metric {u.metric}")
            _ip(
                netns,
                f"-6 route add default via fd10:{subnet:x}::1 dev {u.ifname} metric {u.metric}",
            )
        return netns

    # commands ------------------------------------------------------------------------------

    def run(
        self, netns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0
    ) -> "subprocess.CompletedProcess[str]":
        """Run ``argv`` inside ``netns`` to completion; output captured as text."""
        self._own(netns)
        return _run(["ip", "netns", "exec", netns, *argv], check=check, timeout=timeout)

    def spawn(self, netns: str, argv: Sequence[str], **popen: Any) -> "subprocess.Popen[Any]":
        """Start ``argv`` inside ``netns``; it is stopped at teardown if still running."""
        self._own(netns)
        process = subprocess.Popen(["ip", "netns", "exec", netns, *argv], **popen)
        self.processes.append(process)
        return process

    def ping(
        self,
        netns: str,
        address: object,
        *,
        interface: str | None = None,
        count: int = 1,
        timeout_s: int = 5,
    ) -> bool:
        """Whether ``address`` answers ping from ``netns`` (v4 or v6), via ``interface`` if set."""
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(timeout_s)]
        if interface is not None:
            argv += ["-I", interface]
        argv.append(str(address))
        return self.run(netns, argv, check=False, timeout=count + timeout_s + 5).returncode == 0

    # links ---------------------------------------------------------------------------------

    def counters(self, netns: str, ifname: str) -> LinkCounters:
        self._own(netns)
        output = _run(["ip", "-n", netns, "-j", "-s", "link", "show", "dev", ifname]).stdout
        stats = json.loads(output)[0]["stats64"]
        return LinkCounters(
            rx_bytes=stats["rx"]["bytes"],
            tx_bytes=stats["tx"]["bytes"],
            rx_packets=stats["rx"]["packets"],
            tx_packets=stats["tx"]["packets"],
        )

    def set_link(self, netns: str, ifname: str, *, up: bool) -> None:
        self._own(netns)
        _run(["ip", "-n", netns, "link", "set", ifname, "up" if up else "down"])

    def set_uplink(self, number: int, *, up: bool) -> None:
        """Cut or restore uplink ``number`` at the ISP's LAN port (the client sees no carrier)."""
        uplink = self.topology.uplink(number)
        self.set_link(uplink.isp_ns, uplink.isp_lan_ifname, up=up)

    def shape(self, netns: str, ifname: str, rate_mbit: float, latency_ms: int = 50) -> None:
        """Limit what leaves ``ifname`` to ``rate_mbit`` with a token bucket (tbf)."""
        self._own(netns)
        # Burst: at least one MTU and ~1 ms worth of tokens, so high rates are reachable.
        burst = max(1600, int(rate_mbit * 1e6 / 8 / 1000))
        tbf = ["rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", f"{latency_ms}ms"]
        _run(["tc", "-n", netns, "qdisc", "replace", "dev", ifname, "root", "tbf", *tbf])

    def unshape(self, netns: str, ifname: str) -> None:
        self._own(netns)
        _run(["tc", "-n", netns, "qdisc", "del", "dev", ifname, "root"], check=False)

    def shape_uplink(self, number: int, rate_mbit: float) -> None:
        """Shape uplink ``number`` both ways: client upload and ISP download."""
        uplink = self.topology.uplink(number)
        self.shape(self.topology.client_ns, uplink.ifname, rate_mbit)
        self.shape(uplink.isp_ns, uplink.isp_lan_ifname, rate_mbit)

    def set_loss(self, netns: str, ifnames: Sequence[str], percent: int) -> None:
        """Drop ``percent`` % of what leaves ``ifnames`` in ``netns`` at random (0: stop)."""
        self._own(netns)
        if percent == 0:
            nftables.delete_table(LOSS_TABLE, netns)
            return
        ruleset = nftables.loss_ruleset(ifnames, percent, table=LOSS_TABLE)
        nftables.apply(nftables.render(ruleset), netns)

    def set_delay(
        self,
        number: int,
        delay_ms: float,
        jitter_ms: float = 0.0,
        *,
        direction: str = "both",
        realtime: bool = True,
    ) -> None:
        """Hold what crosses ISP ``number`` for ``delay_ms`` ± ``jitter_ms`` (never reordered).

        ``direction`` is ``"up"`` (client to server), ``"down"`` or ``"both"`` (each way gets the
        full delay: ping RTT grows by 2 x ``delay_ms``). Replaces that direction's delay; set
        it after ``add_client_home`` for those homes to be delayed too. ``realtime`` runs the
        emulator under SCHED_FIFO (more accurate on a busy machine). See ``lab.delay``.
        """
        uplink = self.topology.uplink(number)
        self.clear_delay(number, direction)
        for way in delay.directions(direction):
            running = delay.start(
                self.spawn, uplink.isp_ns, way, delay_ms, jitter_ms, realtime=realtime
            )
            self.delays[number, way.name] = running
        self._steer_delays(number)

    def clear_delay(self, number: int, direction: str = "both") -> dict[str, dict[str, float]]:
        """Remove uplink ``number``'s delay; the stopped directions' counters by direction."""
        stopping = [
            self.delays.pop((number, way.name), None) for way in delay.directions(direction)
        ]
        if any(stopping):
            self._steer_delays(number)  # first stop steering, then stop the processes
        return {r.direction.name: delay.stop(r) for r in stopping if r is not None}

    def _steer_delays(self, number: int) -> None:
        uplink = self.topology.uplink(number)
        active = [way for way in (delay.UP, delay.DOWN) if (number, way.name) in self.delays]
        lans = [uplink.isp_lan_ifname] + [f"lan{k + 2}" for k in range(len(self.extra_clients))]
        delay.steer(uplink.isp_ns, active, lans, uplink.isp_wan_ifname)

    def _own(self, netns: str) -> None:
        # The helpers only ever act inside this bed: never the host or another bed.
        if netns not in self.namespaces:
            raise HostError(f"Namespace {netns!r} is not part of test bed {self.topology.name}.")

    # teardown ------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop every process in the bed, then delete its namespaces; safe to call twice."""
        for process in self.processes:
            _stop(process)
        self.processes.clear()
        for netns in self.namespaces:
            _kill_remaining(netns)
        for netns in self.namespaces:
            if netns in list_namespaces():
                _run(["ip", "netns", "del", netns], check=False)


@contextlib.contextmanager
def build_testbed(uplinks: int = 2, prefix: str = "fx") -> Iterator[Testbed]:
    """Build a test bed with ``uplinks`` uplinks; tear it all down on leaving, whatever happens."""
    bed = Testbed(plan(uplinks, prefix))
    try:
        create(bed.topology)
        yield bed
    finally:
        bed.teardown()


def create(topology: Topology) -> None:
    """Create the namespaces, links, addresses, routes and ISP NAT of ``topology``."""
    taken = set(list_namespaces()) & set(topology.namespaces)
    if taken:
        raise HostError(f"Namespaces {sorted(taken)} already exist; pick another test bed name.")
    for netns in topology.namespaces:
        _run(["ip", "netns", "add", netns])
        _ip(netns, "link set lo up")
    _build_server(topology)
    for uplink in topology.uplinks:
        _build_uplink(topology, uplink)


def _build_server(t: Topology) -> None:
    srv, net = t.server_ns, t.internet_ns
    _ip(srv, f"link add {t.server_ifname} type bridge")
    _ip(srv, f"link set {t.server_ifname} up")
    inet, eth = t.server_internet_ifname, t.internet_ifname
    _ip(srv, f"link add {inet} type veth peer name {eth} netns {net}")
    _address(srv, t.server_ifname, str(t.server_v4), str(t.server_v6))
    _address(srv, t.server_internet_ifname, str(t.server_internet_v4), str(t.server_internet_v6))
    _address(net, t.internet_ifname, str(t.internet_host_v4), str(t.internet_host_v6))
    _ip(net, f"route add default via {t.server_internet_v4.ip}")
    _ip(net, f"-6 route add default via {t.server_internet_v6.ip}")


def _build_uplink(t: Topology, u: Uplink) -> None:
    cli, isp, srv = t.client_ns, u.isp_ns, t.server_ns
    _ip(cli, f"link add {u.ifname} type veth peer name {u.isp_lan_ifname} netns {isp}")
    _ip(isp, f"link add {u.isp_wan_ifname} type veth peer name {u.server_port_ifname} netns {srv}")
    _ip(srv, f"link set {u.server_port_ifname} master {t.server_ifname} up")
    _address(cli, u.ifname, str(u.address_v4), str(u.address_v6))
    lan_v4 = f"{u.gateway_v4}/{u.address_v4.network.prefixlen}"
    lan_v6 = f"{u.gateway_v6}/{u.address_v6.network.prefixlen}"
    _address(isp, u.isp_lan_ifname, lan_v4, lan_v6)
    _address(isp, u.isp_wan_ifname, str(u.isp_public_v4), str(u.isp_public_v6))
    _ip(cli, f"route add default via {u.gateway_v4} dev {u.ifname} metric {u.metric}")
    _ip(cli, f"-6 route add default via {u.gateway_v6} dev {u.ifname} metric {u.metric}")
    # The ISP's upstream is the server's network, as if the server were on the internet.
    _ip(isp, f"route add default via {t.server_v4.ip}")
    _ip(isp, f"-6 route add default via {t.server_v6.ip}")
    sysctl.write_sysctl(sysctl.IPV4_FORWARD, "1", isp)
    sysctl.write_sysctl(sysctl.IPV6_FORWARD, "1", isp)
    # Keep the LAN addresses when the port goes down (a cut uplink), so IPv6 comes back with it.
    sysctl.write_sysctl("net.ipv6.conf.lan.keep_addr_on_down", "1", isp)
    ruleset = nftables.uplink_ruleset([u.isp_wan_ifname], table=ISP_NAT_TABLE)
    nftables.apply(nftables.render(ruleset), isp)


def _address(netns: str, ifname: str, v4: str, v6: str) -> None:
    _ip(netns, f"address add {v4} dev {ifname}")
    # nodad: a fresh veth would otherwise keep its v6 address tentative for a second or two.
    _ip(netns, f"-6 address add {v6} dev {ifname} nodad")
    _ip(netns, f"link set {ifname} up")


def list_namespaces() -> list[str]:
    """Names of every network namespace on the host (``ip netns list``)."""
    output = _run(["ip", "-j", "netns", "list"]).stdout
    return [entry["name"] for entry in json.loads(output or "[]")]


def _ip(netns: str, command: str) -> None:
    _run(["ip", "-n", netns, *command.split()])


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
) -> "subprocess.CompletedProcess[str]":
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostError(f"Test bed command {' '.join(argv)} failed: {exc}") from exc
    if check and done.returncode != 0:
        raise HostError(f"Test bed command {' '.join(argv)} failed: {done.stderr.strip()}")
    return done


def _stop(process: "subprocess.Popen[Any]") -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_GRACE_S)


def _kill_remaining(netns: str) -> None:
    """SIGKILL whatever still runs in ``netns``: a live process keeps the namespace alive."""
    done = _run(["ip", "netns", "pids", netns], check=False)
    for pid in (int(word) for word in done.stdout.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Give the kernel a moment to reap them before the namespace is deleted (bounded).
    for _ in range(50):
        if not _run(["ip", "netns", "pids", netns], check=False).stdout.strip():
            return
        time.sleep(0.02)
    log.warning("processes still alive in %s after SIGKILL", netns)
