"""Links, routes and policy rules as plain data, and their netlink message shapes.

Records are JSON-friendly (``to_record``/``from_record``) so the journal can persist them.
"""

import socket
from dataclasses import asdict, dataclass, field
from ipaddress import ip_network
from typing import Any

MAIN_TABLE = 254
LOCAL_TABLE = 255
PROTO_STATIC = 4


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


def effective_metric(route: Route) -> int:
    if route.metric is not None:
        return route.metric
    return 1024 if route.family == socket.AF_INET6 else 0


def link_from_msg(msg: Any) -> Link:
    info = msg.get("linkinfo")
    kind = info.get("kind") if info is not None else None
    return Link(
        ifname=msg.get("ifname"),
        index=msg["index"],
        up=bool(msg["flags"] & 0x1),  # IFF_UP
        mtu=msg.get("mtu"),
        kind=kind,
    )


def route_from_msg(msg: Any, names: dict[int, str]) -> Route:
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


def rule_from_msg(msg: Any) -> Rule:
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


def rule_spec(rule: Rule) -> dict[str, Any]:
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
