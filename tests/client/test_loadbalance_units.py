"""Load-balance pieces without namespaces: discovery rules, route rendering, stats, flags."""

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest

from fluxify.cli import parse_client_args
from fluxify.client.config import ClientConfig
from fluxify.client.health import HealthMonitor
from fluxify.client.lbstats import LoadBalanceStats
from fluxify.client.lbuplinks import (
    LB_METRIC_V4,
    LB_METRIC_V6,
    Discovery,
    LbUplink,
    discover_uplinks,
    multipath_default,
)
from fluxify.client.loadbalance import LoadBalancer
from fluxify.errors import ConfigError
from fluxify.linux.netlink import NotFoundError
from fluxify.linux.routing import Nexthop

V4, V6 = socket.AF_INET, socket.AF_INET6


class FakeNetlink:
    """Interfaces and their default gateways, as ``Netlink`` would report them."""

    def __init__(self, gateways: dict[str, tuple[str | None, str | None]]) -> None:
        self.gateways = gateways

    def index(self, ifname: str) -> int:
        if ifname not in self.gateways:
            raise NotFoundError(f"There is no network interface named {ifname!r}.")
        return 1

    def gateway_of(self, ifname: str, family: int) -> str | None:
        return self.gateways[ifname][1 if family == V6 else 0]


def discover(
    interfaces: dict[str, tuple[str | None, str | None]],
    ifaces: str,
    gateways: tuple[IPv4Address | IPv6Address, ...] = (),
    weights: tuple[int, ...] = (),
) -> Discovery:
    netlink: Any = FakeNetlink(interfaces)
    return discover_uplinks(netlink, tuple(ifaces.split(",")), gateways=gateways, weights=weights)


def test_discovery_keeps_both_families_and_reports_the_rest() -> None:
    found = discover(
        {"a": ("10.0.0.1", "fd::1"), "b": ("10.0.1.1", "fd:1::1"), "c": (None, None)},
        "a,b,c,zz",
    )
    assert [u.ifname for u in found.uplinks] == ["a", "b"]
    assert [u.index for u in found.uplinks] == [0, 1]
    assert found.families == (V4, V6)
    assert found.skipped == ("c: no IPv4 or IPv6 default gateway", "zz: no such interface")


def test_a_family_with_one_gateway_is_left_alone() -> None:
    found = discover({"a": ("10.0.0.1", "fd::1"), "b": ("10.0.1.1", None)}, "a,b")
    assert found.families == (V4,)
    assert found.uplinks[0].gateway6 is None  # no v6 route, probe or sysctl for it


def test_uplinks_whose_only_family_is_unbalanced_are_skipped() -> None:
    found = discover(
        {"a": ("10.0.0.1", None), "b": ("10.0.1.1", None), "c": (None, "fd::1")}, "a,b,c"
    )
    assert [u.ifname for u in found.uplinks] == ["a", "b"]
    assert found.skipped == ("c: no other uplink has a gateway of its family",)


def test_fewer_than_two_usable_is_an_error_naming_them() -> None:
    with pytest.raises(ConfigError) as caught:
        discover({"a": ("10.0.0.1", None), "b": (None, None)}, "a,b,nope")
    message = str(caught.value)
    assert "usable: a;" in message
    assert "b: no IPv4 or IPv6 default gateway" in message and "nope: no such interface" in message
    with pytest.raises(ConfigError, match="usable: none"):
        discover({"a": ("10.0.0.1", None), "b": (None, "fd::1")}, "a,b")


def test_given_gateways_and_weights_go_by_position() -> None:
    found = discover(
        {"a": (None, None), "b": ("10.0.1.1", None)},
        "a,b",
        gateways=(ip_address("10.0.0.9"),),
        weights=(2, 5),
    )
    assert [(u.gateway4, u.weight) for u in found.uplinks] == [("10.0.0.9", 2), ("10.0.1.1", 5)]
    with pytest.raises(ConfigError, match="-weights"):
        discover({"a": ("1.1.1.1", None), "b": ("1.1.1.2", None)}, "a,b", weights=(1, 2, 3))


UPLINKS = (
    LbUplink(0, "a", "10.0.0.1", "fd::1", weight=1),
    LbUplink(1, "b", "10.0.1.1", None, weight=3),
)


def test_multipath_route_has_one_weighted_nexthop_per_alive_uplink() -> None:
    route = multipath_default(V4, UPLINKS, [True, True])
    assert route.dst == "0.0.0.0/0" and route.metric == LB_METRIC_V4
    assert route.nexthops == (Nexthop("10.0.0.1", "a", 1), Nexthop("10.0.1.1", "b", 3))
    assert multipath_default(V4, UPLINKS, [False, True]).nexthops == (Nexthop("10.0.1.1", "b", 3),)
    v6 = multipath_default(V6, UPLINKS, [True, True])
    assert v6.dst == "::/0" and v6.metric == LB_METRIC_V6
    assert v6.nexthops == (Nexthop("fd::1", "a", 1),)  # b has no v6 gateway


def test_with_no_uplink_alive_the_route_goes_over_all_of_them() -> None:
    assert len(multipath_default(V4, UPLINKS, [False, False]).nexthops) == 2


def test_stats_before_any_probe(tmp_path: Path) -> None:
    stats = LoadBalanceStats(UPLINKS, ["c: no such interface"], tmp_path / "s.json")
    body = stats.snapshot(HealthMonitor([]), {"IPv4": ["a", "b"]}, now=1.0)
    assert [row["ifname"] for row in body["uplinks"]] == ["a", "b"]
    assert body["uplinks"][0]["in_route"] == ["IPv4"]
    assert body["uplinks"][0]["tx_bytes"] is None  # no such interface here
    assert body["skipped"] == ["c: no such interface"]


def test_flags() -> None:
    config = parse_client_args(
        ["-l", "-ifaces", "wan1,wan2", "-probe", "198.18.0.1,2001:db8::1", "-weights", "1,3"]
    )
    assert config.probe_targets == (ip_address("198.18.0.1"), ip_address("2001:db8::1"))
    assert config.weights == (1, 3)
    for bad in ("0", "257", "x", "1,,2"):
        with pytest.raises(SystemExit):
            parse_client_args(["-l", "-weights", bad])


def test_one_interface_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 2 interfaces"):
        LoadBalancer(ClientConfig(ifaces=("wan1",)), tmp_path)
