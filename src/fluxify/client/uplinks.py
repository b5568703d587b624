"""Uplinks of a bonding client: which gateway each has, its socket, and the routing that makes
each socket really leave by its own interface (the original left this to the user).

Per uplink *i*: routing table ``UPLINK_TABLE_BASE + i`` holds a default route via that uplink's
gateway, and a rule sends packets marked ``UPLINK_MARK_BASE + i`` to it; the uplink's sockets
carry that mark (``SO_MARK``) and are bound to the interface (``SO_BINDTODEVICE``). The main
table gets a host route to the server via each uplink's gateway (the control connection uses
the first), and the default route moves to the TUN as two half routes (``0/1`` + ``128/1``,
``::/1`` + ``8000::/1``): more specific than any default, so the previous default routes are
never touched and a crashed client cannot leave the host without one.
"""

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from fluxify.errors import ConfigError, HostError
from fluxify.linux import rx_timestamps, sysctl
from fluxify.linux.journal import Journal
from fluxify.linux.netlink import Netlink
from fluxify.linux.routing import Route, Rule

UPLINK_TABLE_BASE = 52_100
UPLINK_RULE_PRIORITY_BASE = 5_210
UPLINK_MARK_BASE = 0x4658_0100  # "FX" in the high half
HOST_ROUTE_METRIC_BASE = 50
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
HALF_DEFAULTS_V4 = ("0.0.0.0/1", "128.0.0.0/1")
HALF_DEFAULTS_V6 = ("::/1", "8000::/1")
LOOSE_RP_FILTER = "2"  # replies arrive on every uplink, the route back to the server on one


@dataclass(frozen=True)
class UplinkPlan:
    """How one uplink is used: interface, gateway, optional source IP, table, mark, rule."""

    index: int
    ifname: str
    gateway: str
    source_ip: str | None

    @property
    def table(self) -> int:
        return UPLINK_TABLE_BASE + self.index

    @property
    def mark(self) -> int:
        return UPLINK_MARK_BASE + self.index

    @property
    def priority(self) -> int:
        return UPLINK_RULE_PRIORITY_BASE + self.index


def plan_uplinks(
    netlink: Netlink,
    ifaces: Sequence[str],
    family: int,
    *,
    gateways: Sequence[IPv4Address | IPv6Address] = (),
    source_ips: Sequence[IPv4Address | IPv6Address] = (),
) -> list[UplinkPlan]:
    """One plan per interface; gateways come from ``-gws`` by position or are discovered."""
    plans: list[UplinkPlan] = []
    problems: list[str] = []
    for index, ifname in enumerate(ifaces):
        given = gateways[index] if index < len(gateways) else None
        gateway = str(given) if given is not None else netlink.gateway_of(ifname, family)
        if gateway is None:
            problems.append(ifname)
            continue
        source = str(source_ips[index]) if index < len(source_ips) else None
        plans.append(UplinkPlan(len(plans), ifname, gateway, source))
    if problems:
        kind = "IPv4" if family == socket.AF_INET else "IPv6"
        raise ConfigError(
            f"no {kind} default gateway found on {', '.join(problems)}; give it with -gws "
            "(one per interface, in -ifaces order) or pick interfaces that have one"
        )
    return plans


def apply_uplink_routing(journal: Journal, plans: Sequence[UplinkPlan], server_ip: str) -> None:
    """Tables, rules and host routes so each uplink's sockets leave by that uplink."""
    family = socket.AF_INET6 if ":" in server_ip else socket.AF_INET
    default = "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"
    host = f"{server_ip}/{128 if family == socket.AF_INET6 else 32}"
    for plan in plans:
        journal.add_route(
            Route(dst=default, gateway=plan.gateway, ifname=plan.ifname, table=plan.table)
        )
        journal.add_rule(
            Rule(
                priority=plan.priority,
                table=plan.table,
                family=family,
                fwmark=plan.mark,
                fwmask=0xFFFF_FFFF,
            )
        )
        journal.add_route(
            Route(
                dst=host,
                gateway=plan.gateway,
                ifname=plan.ifname,
                metric=HOST_ROUTE_METRIC_BASE + plan.index,
            )
        )
        if family == socket.AF_INET:
            journal.set_sysctl(sysctl.rp_filter_name(plan.ifname), LOOSE_RP_FILTER)


def apply_default_via_tun(journal: Journal, tun_name: str, *, ipv6: bool) -> None:
    for dst in HALF_DEFAULTS_V4 + (HALF_DEFAULTS_V6 if ipv6 else ()):
        journal.add_route(Route(dst=dst, ifname=tun_name))


def open_uplink_socket(plan: UplinkPlan, family: int) -> socket.socket:
    """A non-blocking, unconnected UDP socket that leaves by ``plan``'s uplink.

    Unconnected on purpose: with uvloop, an ICMP error on a connected UDP socket silently
    stops its reader for good (reference/python-datapath.md, pitfalls).
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, plan.ifname.encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, plan.mark)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        sock.bind((plan.source_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"), 0))
        rx_timestamps.enable(sock)  # one-way delays without our own receive backlog
    except OSError as exc:
        sock.close()
        raise HostError(
            f"cannot open a UDP socket on uplink {plan.ifname}"
            f"{' from ' + plan.source_ip if plan.source_ip else ''}: {exc.strerror or exc}"
        ) from exc
    sock.setblocking(False)
    return sock


def resolve_server(host: str) -> str:
    """The server's IP address as text (a host route needs an address, not a name)."""
    try:
        return str(ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve the server name {host!r}: {exc.strerror}") from exc
    return str(infos[0][4][0])
