"""Links, addresses, routes and policy rules through pyroute2 netlink (never ``ip`` text).

These are the primitives; journaled changes with their undo go through ``linux.journal``.
"""

import errno
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from ipaddress import ip_interface, ip_network
from typing import Any, TypeVar

from pyroute2 import IPRoute, NetlinkError

from fluxify.errors import HostError
from fluxify.linux.netns import NetnsThread

T = TypeVar("T")

MAIN_TABLE = 254
LOCAL_TABLE = 255
PROTO_STATIC = 4
# Errors that mean "the thing to remove is already gone" (undo tolerates them).
GONE_ERRNOS = frozenset({errno.ESRCH, errno.ENOENT, errno.ENODEV, errno.EADDRNOTAVAIL})


class NotFoundError(HostError):
    """The route, rule, address or interface does not exist (undo treats it as done)."""


class ExistsError(HostError):
    """The route, rule or address already exists."""


@dataclass(frozen=True)
class Nexthop:
    """One leg of a multipath route; ``weight`` as in ``ip route ... weight W`` (1..256)."""

    gateway: str | None = None
    ifname: str | None = None
    weight: int = 1


@dataclass(frozen=True)
class Route:
    """A route. ``dst`` is a prefix ("0.0.0.0/0", "::/0", "198.18.0.1/32").

    ``metric`` None means the kernel default (0 for IPv4, 1024 for IPv6); ``proto`` and
    ``scope`` None mean "static"/kernel default when adding and "any" when deleting. Routes
    listed by ``Netlink.routes`` have every field filled, so they delete and re-add exactly.
    Interfaces are named, not indexed, so a record stays meaningful in another process.
    """

    dst: str
    gateway: str | None = None
    ifname: str | None = None
    table: int = MAIN_TABLE
    metric: int | None = None
    proto: int | None = None
    scope: int | None = None
    type: int = 1  # RTN_UNICAST
    src: str | None = None
    nexthops: tuple[Nexthop, ...] = ()

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.dst else socket.AF_INET

    @property
    def is_default(self) -> bool:
        return ip_network(self.dst).prefixlen == 0

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Route":
        nexthops = tuple(Nexthop(**hop) for hop in record.get("nexthops", ()))
        return cls(**{**record, "nexthops": nexthops})


@dataclass(frozen=True)
class Rule:
    """A policy rule ``priority: from SRC [fwmark M/MASK] [oif IF] [iif IF] lookup TABLE``.

    ``priority`` is required: it is how a rule is deleted exactly, never someone else's.
    """

    priority: int
    table: int
    family: int = socket.AF_INET
    src: str | None = None
    dst: str | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    oifname: str | None = None
    iifname: str | None = None

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Rule":
        return cls(**record)


@dataclass(frozen=True)
class Link:
    """An interface's name, index, administrative state and MTU."""

    ifname: str
    index: int
    up: bool
    mtu: int
    kind: str | None = field(default=None, compare=False)


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
        return [_link_from_msg(m) for m in self._run("list interfaces", lambda i: i.get_links())]

    def link(self, ifname: str) -> Link:
        index = self.index(ifname)
        return _link_from_msg(self._run(f"read {ifname}", lambda i: i.get_links(index))[0])

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
        return [_route_from_msg(m, names) for m in msgs]

    def add_route(self, route: Route) -> None:
        self._route("add", route)

    def replace_route(self, route: Route) -> None:
        self._route("replace", route)

    def delete_route(self, route: Route) -> None:
        self._route("del", route)

    def replaced_by(self, route: Route) -> list[Route]:
        """The existing routes that ``replace_route(route)`` would overwrite (same key)."""
        wanted_metric = _effective_metric(route)
        return [
            old
            for old in self.routes(route.family, route.table)
            if ip_network(old.dst) == ip_network(route.dst)
            and _effective_metric(old) == wanted_metric
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
        return [_rule_from_msg(m) for m in msgs]

    def add_rule(self, rule: Rule) -> None:
        spec = _rule_spec(rule)
        self._run(f"add rule {rule.priority}", lambda i: i.rule("add", **spec))

    def delete_rule(self, rule: Rule) -> None:
        spec = _rule_spec(rule)
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


def _effective_metric(route: Route) -> int:
    if route.metric is not None:
        return route.metric
    return 1024 if route.family == socket.AF_INET6 else 0


def _link_from_msg(msg: Any) -> Link:
    info = msg.get("linkinfo")
    kind = info.get("kind") if info is not None else None
    return Link(
        ifname=msg.get("ifname"),
        index=msg["index"],
        up=bool(msg["flags"] & 0x1),  # IFF_UP
        mtu=msg.get("mtu"),
        kind=kind,
    )


def _route_from_msg(msg: Any, names: dict[int, str]) -> Route:
    family = msg["family"]
    dst = msg.get("dst") or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    oif = msg.get("oif")
    hops = tuple(
        Nexthop(
            gateway=hop.get("gateway"),
            ifname=names.get(hop["oif"]) if hop["oif"] else None,
            weight=hop["hops"] + 1,
        )
        for hop in msg.get("multipath") or ()
    )
    return Route(
        dst=f"{dst}/{msg['dst_len']}",
        gateway=msg.get("gateway"),
        ifname=names.get(oif) if oif is not None else None,
        table=msg.get("table") or msg["table"],
        metric=msg.get("priority"),
        proto=msg["proto"],
        scope=msg["scope"],
        type=msg["type"],
        src=msg.get("prefsrc"),
        nexthops=hops,
    )


def _rule_from_msg(msg: Any) -> Rule:
    src = msg.get("src")
    dst = msg.get("dst")
    return Rule(
        priority=msg.get("priority") or 0,
        table=msg.get("table") or msg["table"],
        family=msg["family"],
        src=f"{src}/{msg['src_len']}" if src else None,
        dst=f"{dst}/{msg['dst_len']}" if dst else None,
        fwmark=msg.get("fwmark"),
        fwmask=msg.get("fwmask"),
        oifname=msg.get("oifname"),
        iifname=msg.get("iifname"),
    )


def _rule_spec(rule: Rule) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "family": rule.family,
        "priority": rule.priority,
        "table": rule.table,
        "action": "FR_ACT_TO_TBL",
    }
    for name, prefix in (("src", rule.src), ("dst", rule.dst)):
        if prefix is not None:
            network = ip_network(prefix, strict=False)
            spec[name] = str(network.network_address)
            spec[f"{name}_len"] = network.prefixlen
    for name in ("fwmark", "fwmask", "oifname", "iifname"):
        value = getattr(rule, name)
        if value is not None:
            spec[name] = value
    return spec
