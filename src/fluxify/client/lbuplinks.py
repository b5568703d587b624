"""Load-balance uplinks: gateway discovery, the host setup around them, and the multipath route.

Per uplink *i* and family, table ``LB_TABLE_BASE + i`` holds a default route via that uplink's
gateway and a rule sends packets marked ``LB_MARK_BASE + i`` there: the health probes carry the
mark, so they leave by their uplink whatever the main table says. The multipath default route
gets its own metric (``LB_METRIC_V4`` 0, ``LB_METRIC_V6`` 1, the lowest each family allows): it
wins over the host's defaults, which normally stay in place underneath. A rule per uplink address
(``from ADDR lookup`` its table) keeps a connection on the uplink whose address it took, even when
the kernel looks its route up again mid-flow (measured: without it, IPv6 connections were
occasionally reset, leaving by one ISP with the other's address). Every change goes through the
journal.
"""

import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_interface

from fluxify.errors import ConfigError
from fluxify.linux import nftables, sysctl
from fluxify.linux.journal import Journal
from fluxify.linux.netlink import Netlink, NotFoundError
from fluxify.linux.routing import Nexthop, Route, Rule

log = logging.getLogger(__name__)

LB_TABLE_BASE = 52_200
LB_RULE_PRIORITY_BASE = 5_230
LB_MARK_BASE = 0x4658_0200  # "FX" in the high half; bonding uses 0x4658_01xx
LB_SOURCE_PRIORITY_BASE = 5_250
LB_METRIC_V4 = 0
LB_METRIC_V6 = 1  # the kernel turns an IPv6 metric 0 into 1024
DEFAULT_WEIGHT = 1
MAX_WEIGHT = 256
LOOSE_RP_FILTER = "2"  # replies may arrive on an uplink whose nexthop was just removed
L4_HASH_POLICY = "1"  # spread flows by ports too, not only by addresses
FAMILIES = (socket.AF_INET, socket.AF_INET6)
DEFAULT_DST: dict[int, str] = {socket.AF_INET: "0.0.0.0/0", socket.AF_INET6: "::/0"}
HASH_POLICY_SYSCTL: dict[int, str] = {
    socket.AF_INET: "net.ipv4.fib_multipath_hash_policy",
    socket.AF_INET6: "net.ipv6.fib_multipath_hash_policy",
}


@dataclass(frozen=True)
class LbUplink:
    """One usable uplink: its interface, gateways (None: that family unused) and weight."""

    index: int
    ifname: str
    gateway4: str | None
    gateway6: str | None
    weight: int = DEFAULT_WEIGHT

    @property
    def table(self) -> int:
        return LB_TABLE_BASE + self.index

    @property
    def mark(self) -> int:
        return LB_MARK_BASE + self.index

    @property
    def priority(self) -> int:
        return LB_RULE_PRIORITY_BASE + self.index

    def gateway(self, family: int) -> str | None:
        return self.gateway6 if family == socket.AF_INET6 else self.gateway4


@dataclass(frozen=True)
class Discovery:
    """The usable uplinks, one sentence per interface skipped, and the families to balance."""

    uplinks: tuple[LbUplink, ...]
    skipped: tuple[str, ...]
    families: tuple[int, ...]


def discover_uplinks(
    netlink: Netlink,
    ifaces: Sequence[str],
    *,
    gateways: Sequence[IPv4Address | IPv6Address] = (),
    weights: Sequence[int] = (),
) -> Discovery:
    """Each interface's v4 and v6 gateway (``-gws`` by position overrides its family).

    A family is balanced when at least two uplinks have a gateway in it. Raises
    ``ConfigError`` naming the interfaces when fewer than two uplinks are usable.
    """
    if len(weights) > len(ifaces):
        raise ConfigError(f"-weights: {len(weights)} weights for {len(ifaces)} interfaces")
    for weight in weights:
        if not DEFAULT_WEIGHT <= weight <= MAX_WEIGHT:
            raise ConfigError(f"-weights: {weight} is outside 1..{MAX_WEIGHT}")
    uplinks: list[LbUplink] = []
    skipped: list[str] = []
    for position, ifname in enumerate(ifaces):
        given = gateways[position] if position < len(gateways) else None
        weight = weights[position] if position < len(weights) else DEFAULT_WEIGHT
        found = _gateways_of(netlink, ifname, given)
        if isinstance(found, str):
            skipped.append(f"{ifname}: {found}")
        else:
            uplinks.append(LbUplink(0, ifname, *found, weight=weight))
    _require_two(uplinks, skipped)
    families = tuple(f for f in FAMILIES if sum(u.gateway(f) is not None for u in uplinks) >= 2)
    balanced: list[LbUplink] = []
    for uplink in uplinks:
        if any(uplink.gateway(f) for f in families):
            # A gateway of an unbalanced family is left alone: no route, probe or sysctl.
            balanced.append(
                replace(
                    uplink,
                    index=len(balanced),
                    gateway4=uplink.gateway4 if socket.AF_INET in families else None,
                    gateway6=uplink.gateway6 if socket.AF_INET6 in families else None,
                )
            )
        else:
            skipped.append(f"{uplink.ifname}: no other uplink has a gateway of its family")
    _require_two(balanced, skipped)
    return Discovery(tuple(balanced), tuple(skipped), families)


def _gateways_of(
    netlink: Netlink, ifname: str, given: IPv4Address | IPv6Address | None
) -> tuple[str | None, str | None] | str:
    """``(gateway4, gateway6)`` of ``ifname``, or why it cannot be used."""
    try:
        netlink.index(ifname)
    except NotFoundError:
        return "no such interface"
    found = {f: netlink.gateway_of(ifname, f) for f in FAMILIES}
    if given is not None:
        found[socket.AF_INET6 if given.version == 6 else socket.AF_INET] = str(given)
    if found[socket.AF_INET] is None and found[socket.AF_INET6] is None:
        return "no IPv4 or IPv6 default gateway"
    return found[socket.AF_INET], found[socket.AF_INET6]


def _require_two(uplinks: Sequence[LbUplink], skipped: Sequence[str]) -> None:
    if len(uplinks) < 2:
        usable = ", ".join(u.ifname for u in uplinks) or "none"
        raise ConfigError(
            "-ifaces: load-balance needs at least 2 interfaces with a default gateway; "
            f"usable: {usable}; skipped: {'; '.join(skipped) or 'none'}"
        )


def prepare_host(journal: Journal, uplinks: Sequence[LbUplink], families: Sequence[int]) -> None:
    """Masquerade, sysctls and the probes' own routing; journaled, before any default changes."""
    journal.apply_nftables(nftables.uplink_ruleset([u.ifname for u in uplinks]))
    for family in families:
        _set_unless(journal, HASH_POLICY_SYSCTL[family], L4_HASH_POLICY, lambda v: v != "0")
    for uplink in uplinks:
        if uplink.gateway4 is not None:
            name = sysctl.rp_filter_name(uplink.ifname)
            _set_unless(journal, name, LOOSE_RP_FILTER, lambda v: v == LOOSE_RP_FILTER)
        for family in families:
            gateway = uplink.gateway(family)
            if gateway is None:
                continue
            route = Route(
                dst=DEFAULT_DST[family], gateway=gateway, ifname=uplink.ifname, table=uplink.table
            )
            journal.add_route(route)
            journal.add_rule(
                Rule(
                    priority=uplink.priority,
                    table=uplink.table,
                    family=family,
                    fwmark=uplink.mark,
                    fwmask=0xFFFF_FFFF,
                )
            )
            for address in source_addresses(journal.netlink, uplink.ifname, family):
                priority = LB_SOURCE_PRIORITY_BASE + uplink.index
                journal.add_rule(Rule(priority, uplink.table, family, src=address))


def source_addresses(netlink: Netlink, ifname: str, family: int) -> list[str]:
    """The addresses of ``ifname`` that connections may take as source ("a.b.c.d/32")."""
    found = []
    for _, text in netlink.addresses(ifname):
        address = ip_interface(text).ip
        if (address.version == 6) == (family == socket.AF_INET6) and not address.is_link_local:
            found.append(f"{address}/{address.max_prefixlen}")
    return found


def _set_unless(journal: Journal, name: str, value: str, fine: Callable[[str], bool]) -> None:
    if not fine(sysctl.read_sysctl(name, journal.netns)):
        journal.set_sysctl(name, value)


def multipath_default(family: int, uplinks: Sequence[LbUplink], alive: Sequence[bool]) -> Route:
    """The default route of ``family``: one nexthop per alive uplink with a gateway.

    With none alive, every uplink with a gateway: all probes failing at once more likely means
    the probe target is down than every uplink, and a route via everything is still a route.
    """
    candidates = [(u, a) for u, a in zip(uplinks, alive, strict=True) if u.gateway(family)]
    chosen = [u for u, a in candidates if a] or [u for u, _ in candidates]
    hops = tuple(Nexthop(u.gateway(family), u.ifname, u.weight) for u in chosen)
    metric = LB_METRIC_V6 if family == socket.AF_INET6 else LB_METRIC_V4
    return Route(dst=DEFAULT_DST[family], metric=metric, nexthops=hops)


def describe(route: Route) -> str:
    return ", ".join(f"{hop.ifname} (weight {hop.weight})" for hop in route.nexthops)
