"""Links, addresses, routes and policy rules through pyroute2 netlink (never ``ip`` text).

These are the primitives; journaled changes with their undo go through ``linux.journal``.
"""

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import ip_interface, ip_network
from typing import Any, TypeVar

from pyroute2 import IPRoute, NetlinkError

from fluxify.errors import HostError
from fluxify.linux.netns import NetnsThread
from fluxify.linux.routing import (
    MAIN_TABLE,
    PROTO_STATIC,
    Link,
    Nexthop,
    Route,
    Rule,
    effective_metric,
    link_from_msg,
    route_from_msg,
    rule_from_msg,
    rule_spec,
)

# Route, Rule, Nexthop and Link live in ``linux.routing``; re-exported for callers' convenience.
__all__ = [
    "GONE_ERRNOS",
    "ExistsError",
    "Link",
    "Netlink",
    "Nexthop",
    "NotFoundError",
    "Route",
    "Rule",
]

T = TypeVar("T")

# Errors that mean "the thing to remove is already gone" (undo tolerates them).
GONE_ERRNOS = frozenset({errno.ESRCH, errno.ENOENT, errno.ENODEV, errno.EADDRNOTAVAIL})


class NotFoundError(HostError):
    """The route, rule, address or interface does not exist (undo treats it as done)."""


class ExistsError(HostError):
    """The route, rule or address already exists."""


class Netlink:
    """Netlink access to one network namespace (``netns`` None: this process's namespace).

    Every call runs on a ``NetnsThread`` owning one pyroute2 ``IPRoute``: that is how the same
    code works in a throwaway test namespace and how it stays callable from asyncio code.
    Netlink errors become ``HostError`` (``NotFoundError`` when the object is missing).
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._thread = NetnsThread(netns)
        self._ipr: Any = self._thread.call(IPRoute)

    def close(self) -> None:
        self._thread.call(self._ipr.close)
        self._thread.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, what: str, fn: Callable[[Any], T]) -> T:
        with _translated(what):
            return self._thread.call(fn, self._ipr)

    # links ---------------------------------------------------------------------------------

    def index(self, ifname: str) -> int:
        found: list[int] = self._run(f"look up {ifname}", lambda i: i.link_lookup(ifname=ifname))
        if not found:
            raise NotFoundError(f"There is no network interface named {ifname!r}.")
        return found[0]

    def links(self) -> list[Link]:
        return [link_from_msg(m) for m in self._run("list interfaces", lambda i: i.get_links())]

    def link(self, ifname: str) -> Link:
        index = self.index(ifname)
        return link_from_msg(self._run(f"read {ifname}", lambda i: i.get_links(index))[0])

    def set_link(self, ifname: str, *, up: bool | None = None, mtu: int | None = None) -> None:
        """Set ``ifname`` up or down and/or its MTU; None leaves that property alone."""
        changes: dict[str, Any] = {}
        if up is not None:
            changes["state"] = "up" if up else "down"
        if mtu is not None:
            changes["mtu"] = mtu
        index = self.index(ifname)
        self._run(f"configure {ifname}", lambda i: i.link("set", index=index, **changes))

    # addresses -----------------------------------------------------------------------------

    def addresses(self, ifname: str | None = None) -> list[tuple[str, str]]:
        """``(ifname, "addr/prefix")`` pairs, of one interface or all."""
        names = {link.index: link.ifname for link in self.links()}
        query: dict[str, Any] = {} if ifname is None else {"index": self.index(ifname)}
        msgs = self._run("list addresses", lambda i: i.get_addr(**query))
        return [
            (names.get(m["index"], str(m["index"])), f"{m.get('address')}/{m['prefixlen']}")
            for m in msgs
        ]

    def add_address(self, ifname: str, address: str, *, nodad: bool = False) -> None:
        """Add ``address`` ("10.8.0.2/24", "fd00:8::2/64"); ``nodad`` skips IPv6 DAD."""
        iface = ip_interface(address)
        index = self.index(ifname)
        extra = {"flags": 0x02} if nodad else {}  # IFA_F_NODAD
        self._run(
            f"add {address} to {ifname}",
            lambda i: i.addr(
                "add",
                index=index,
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
                **extra,
            ),
        )

    def delete_address(self, ifname: str, address: str) -> None:
        iface = ip_interface(address)
        index = self.index(ifname)
        self._run(
            f"remove {address} from {ifname}",
            lambda i: i.addr(
                "del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
            ),
        )

    # routes --------------------------------------------------------------------------------

    def routes(self, family: int, table: int | None = None) -> list[Route]:
        """Routes of ``family`` in ``table`` (None: every table, the local one included)."""
        names = {link.index: link.ifname for link in self.links()}
        query: dict[str, Any] = {"family": family}
        if table is not None:
            query["table"] = table
        msgs = self._run("list routes", lambda i: i.get_routes(**query))
        return [route_from_msg(m, names) for m in msgs]

    def add_route(self, route: Route) -> None:
        self._route("add", route)

    def replace_route(self, route: Route) -> None:
        self._route("replace", route)

    def delete_route(self, route: Route) -> None:
        self._route("del", route)

    def replaced_by(self, route: Route) -> list[Route]:
        """The existing routes that ``replace_route(route)`` would overwrite (same key)."""
        wanted_metric = effective_metric(route)
        return [
            old
            for old in self.routes(route.family, route.table)
            if ip_network(old.dst) == ip_network(route.dst)
            and effective_metric(old) == wanted_metric
            and old.type == route.type
        ]

    def _route(self, command: str, route: Route) -> None:
        spec = self._route_spec(route)
        if command != "del":
            spec.setdefault("proto", PROTO_STATIC)
        self._run(f"{command} route {route.dst}", lambda i: i.route(command, **spec))

    def _route_spec(self, route: Route) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "family": route.family,
            "dst": route.dst,
            "table": route.table,
            "type": route.type,
        }
        if route.proto is not None:
            spec["proto"] = route.proto
        if route.scope is not None:
            spec["scope"] = route.scope
        if route.metric is not None:
            spec["priority"] = route.metric
        if route.gateway is not None:
            spec["gateway"] = route.gateway
        if route.ifname is not None:
            spec["oif"] = self.index(route.ifname)
        if route.src is not None:
            spec["prefsrc"] = route.src
        if route.nexthops:
            spec["multipath"] = [self._hop_spec(hop) for hop in route.nexthops]
        return spec

    def _hop_spec(self, hop: Nexthop) -> dict[str, Any]:
        spec: dict[str, Any] = {"hops": hop.weight - 1}
        if hop.gateway is not None:
            spec["gateway"] = hop.gateway
        if hop.ifname is not None:
            spec["oif"] = self.index(hop.ifname)
        return spec

    def gateway_of(self, ifname: str, family: int) -> str | None:
        """The gateway of ``ifname``'s default route in the main table (multipath legs too)."""
        for route in self.routes(family, MAIN_TABLE):
            if not route.is_default:
                continue
            if route.ifname == ifname and route.gateway is not None:
                return route.gateway
            for hop in route.nexthops:
                if hop.ifname == ifname and hop.gateway is not None:
                    return hop.gateway
        return None

    # rules ---------------------------------------------------------------------------------

    def rules(self, family: int) -> list[Rule]:
        msgs = self._run("list rules", lambda i: i.get_rules(family=family))
        return [rule_from_msg(m) for m in msgs]

    def add_rule(self, rule: Rule) -> None:
        spec = rule_spec(rule)
        self._run(f"add rule {rule.priority}", lambda i: i.rule("add", **spec))

    def delete_rule(self, rule: Rule) -> None:
        spec = rule_spec(rule)
        self._run(f"delete rule {rule.priority}", lambda i: i.rule("del", **spec))


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn netlink and OS errors into a ``HostError`` sentence naming the failed step."""
    try:
        yield
    except NetlinkError as exc:
        reason = _errno_text(exc.code)
        if exc.code in GONE_ERRNOS:
            raise NotFoundError(f"Cannot {what}: {reason}.") from exc
        if exc.code == errno.EEXIST:
            raise ExistsError(f"Cannot {what}: {reason}.") from exc
        raise HostError(f"Cannot {what}: {reason}.") from exc
    except OSError as exc:
        raise HostError(f"Cannot {what}: {exc.strerror or exc}.") from exc


def _errno_text(code: int) -> str:
    return os.strerror(code) if code > 0 else f"netlink error {code}"
