"""The test bed's plan: namespace names, interface names and addresses (pure data, no I/O).

client ─wanN─ ispN (NAT, like a home router) ─┐
                                               ├─ br0 server (198.18.0.1) ─inet─ internet host
client ─wan1─ isp1 (NAT) ─────────────────────┘
"""

import secrets
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

MAX_UPLINKS = 8
# RFC 2544 benchmarking range for the "public internet"; documentation range for its v6.
SERVER_PUBLIC_V4 = IPv4Interface("198.18.0.1/24")
SERVER_PUBLIC_V6 = IPv6Interface("2001:db8::1/64")
SERVER_INTERNET_V4 = IPv4Interface("198.19.0.1/24")
SERVER_INTERNET_V6 = IPv6Interface("2001:db8:1::1/64")
INTERNET_HOST_V4 = IPv4Interface("198.19.0.2/24")
INTERNET_HOST_V6 = IPv6Interface("2001:db8:1::2/64")
# Client-side default route metric of uplink N: N * step (the first uplink is preferred,
# as NetworkManager would order them).
UPLINK_METRIC_STEP = 100


@dataclass(frozen=True)
class Uplink:
    """Uplink ``number`` (1-based): the client's interface, its home network and its ISP."""

    number: int
    ifname: str  # in the client namespace
    address_v4: IPv4Interface
    address_v6: IPv6Interface
    gateway_v4: IPv4Address  # the ISP router's LAN side
    gateway_v6: IPv6Address
    metric: int
    isp_ns: str
    isp_public_v4: IPv4Interface  # what the server sees after the ISP's NAT
    isp_public_v6: IPv6Interface
    isp_lan_ifname: str = "lan"
    isp_wan_ifname: str = "wan"
    server_port_ifname: str = ""  # the ISP's port on the server's bridge


@dataclass(frozen=True)
class Topology:
    """Every name and address of one test bed; ``name`` makes its namespaces unique."""

    name: str
    client_ns: str
    server_ns: str
    internet_ns: str
    uplinks: tuple[Uplink, ...]
    server_ifname: str = "br0"
    server_v4: IPv4Interface = SERVER_PUBLIC_V4
    server_v6: IPv6Interface = SERVER_PUBLIC_V6
    server_internet_ifname: str = "inet"
    server_internet_v4: IPv4Interface = SERVER_INTERNET_V4
    server_internet_v6: IPv6Interface = SERVER_INTERNET_V6
    internet_ifname: str = "eth0"
    internet_host_v4: IPv4Interface = INTERNET_HOST_V4
    internet_host_v6: IPv6Interface = INTERNET_HOST_V6

    @property
    def namespaces(self) -> tuple[str, ...]:
        isps = tuple(uplink.isp_ns for uplink in self.uplinks)
        return (self.client_ns, *isps, self.server_ns, self.internet_ns)

    def uplink(self, number: int) -> Uplink:
        return self.uplinks[number - 1]


def plan(uplinks: int = 2, prefix: str = "fx", suffix: str | None = None) -> Topology:
    """The topology for ``uplinks`` uplinks; names are ``<prefix><suffix>-<role>``.

    The random ``suffix`` keeps concurrent and leftover test beds apart.
    """
    if not 1 <= uplinks <= MAX_UPLINKS:
        raise ValueError(f"a test bed has 1..{MAX_UPLINKS} uplinks, not {uplinks}")
    if not prefix.isalnum():
        raise ValueError(f"test bed prefix {prefix!r} must be letters and digits")
    name = prefix + (suffix if suffix is not None else secrets.token_hex(2))
    return Topology(
        name=name,
        client_ns=f"{name}-cli",
        server_ns=f"{name}-srv",
        internet_ns=f"{name}-net",
        uplinks=tuple(_uplink(name, number) for number in range(1, uplinks + 1)),
    )


def _uplink(name: str, number: int) -> Uplink:
    return Uplink(
        number=number,
        ifname=f"wan{number}",
        address_v4=IPv4Interface(f"192.168.{number}.2/24"),
        address_v6=IPv6Interface(f"fd10:{number}::2/64"),
        gateway_v4=IPv4Address(f"192.168.{number}.1"),
        gateway_v6=IPv6Address(f"fd10:{number}::1"),
        metric=number * UPLINK_METRIC_STEP,
        isp_ns=f"{name}-isp{number}",
        isp_public_v4=IPv4Interface(f"198.18.0.{10 + number}/24"),
        isp_public_v6=IPv6Interface(f"2001:db8::{10 + number:x}/64"),
        server_port_ifname=f"isp{number}",
    )
