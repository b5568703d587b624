import socket

import pytest

from fluxify.errors import HostError
from fluxify.linux.netlink import ExistsError, Netlink, NotFoundError
from fluxify.linux.routing import Nexthop, Route, Rule
from tests.linux.conftest import ip, needs_root


def test_route_and_rule_records_round_trip_through_json_shapes() -> None:
    route = Route("0.0.0.0/0", nexthops=(Nexthop("192.0.2.1", "wan0", 2),), metric=5)
    assert Route.from_record(route.to_record()) == route
    rule = Rule(priority=100, table=100, src="192.0.2.2/32", fwmark=1, fwmask=0xFF)
    assert Rule.from_record(rule.to_record()) == rule


@needs_root
def test_links_and_addresses(uplink_netns: str) -> None:
    with Netlink(uplink_netns) as netlink:
        netlink.set_link("peer0", mtu=1280, up=False)
        peer = netlink.link("peer0")
        assert (peer.up, peer.mtu, peer.kind) == (False, 1280, "veth")
        netlink.add_address("wan0", "198.51.100.7/24")
        netlink.add_address("wan0", "2001:db8:9::7/64", nodad=True)
        assert ("wan0", "198.51.100.7/24") in netlink.addresses("wan0")
        assert ("wan0", "2001:db8:9::7/64") in netlink.addresses()
        with pytest.raises(ExistsError):
            netlink.add_address("wan0", "198.51.100.7/24")
        netlink.delete_address("wan0", "198.51.100.7/24")
        with pytest.raises(NotFoundError):
            netlink.delete_address("wan0", "198.51.100.7/24")
        with pytest.raises(NotFoundError, match="no network interface named 'nope0'"):
            netlink.set_link("nope0", up=True)


@needs_root
def test_routes_in_tables_multipath_and_host_routes(uplink_netns: str) -> None:
    with Netlink(uplink_netns) as netlink:
        host = Route("198.18.0.1/32", gateway="192.0.2.1", ifname="wan0")
        netlink.add_route(host)
        assert "198.18.0.1/32" in {r.dst for r in netlink.routes(socket.AF_INET, 254)}
        multipath = Route(
            "0.0.0.0/0",
            table=200,
            nexthops=(Nexthop("192.0.2.1", "wan0", 1), Nexthop("192.0.2.9", "wan0", 3)),
        )
        netlink.add_route(multipath)
        (listed_mp,) = netlink.routes(socket.AF_INET, 200)
        assert listed_mp.nexthops == multipath.nexthops
        v6 = Route("2001:db8:77::/64", gateway="2001:db8:5::1", ifname="wan0", table=200)
        netlink.add_route(v6)
        (listed,) = [r for r in netlink.routes(socket.AF_INET6, 200) if r.dst.startswith("2001")]
        assert (listed.gateway, listed.ifname, listed.metric) == ("2001:db8:5::1", "wan0", 1024)
        netlink.delete_route(host)
        with pytest.raises(NotFoundError):
            netlink.delete_route(host)
        assert "198.18.0.1" not in ip("-n", uplink_netns, "route")


@needs_root
def test_replaced_by_finds_the_default_route_a_replace_would_overwrite(uplink_netns: str) -> None:
    with Netlink(uplink_netns) as netlink:
        (old,) = netlink.replaced_by(Route("0.0.0.0/0", metric=100, ifname="wan0"))
        assert (old.gateway, old.ifname, old.metric) == ("192.0.2.1", "wan0", 100)
        assert netlink.replaced_by(Route("0.0.0.0/0", metric=7, ifname="wan0")) == []
        (old6,) = netlink.replaced_by(Route("::/0", ifname="wan0"))
        assert old6.gateway == "2001:db8:5::1"


@needs_root
def test_gateway_of_reads_default_routes_by_interface(uplink_netns: str) -> None:
    with Netlink(uplink_netns) as netlink:
        assert netlink.gateway_of("wan0", socket.AF_INET) == "192.0.2.1"
        assert netlink.gateway_of("wan0", socket.AF_INET6) == "2001:db8:5::1"
        assert netlink.gateway_of("peer0", socket.AF_INET) is None
        netlink.delete_route(Route("0.0.0.0/0", metric=100, gateway="192.0.2.1", ifname="wan0"))
        netlink.add_route(Route("0.0.0.0/0", nexthops=(Nexthop("192.0.2.5", "wan0"),)))
        assert netlink.gateway_of("wan0", socket.AF_INET) == "192.0.2.5"


@needs_root
def test_rules_by_source_fwmark_and_oif(uplink_netns: str) -> None:
    rules = [
        Rule(priority=1000, table=100, src="192.0.2.2/32"),
        Rule(priority=1001, table=101, fwmark=0x51, fwmask=0xFF),
        Rule(priority=1002, table=102, oifname="wan0"),
        Rule(priority=1003, table=103, family=socket.AF_INET6, src="2001:db8:5::2/128"),
    ]
    with Netlink(uplink_netns) as netlink:
        for rule in rules:
            netlink.add_rule(rule)
        listed = netlink.rules(socket.AF_INET) + netlink.rules(socket.AF_INET6)
        for rule in rules:
            assert rule in listed
        for rule in rules:
            netlink.delete_rule(rule)
        with pytest.raises(NotFoundError):
            netlink.delete_rule(rules[0])
        assert "lookup 100" not in ip("-n", uplink_netns, "rule")


@needs_root
def test_missing_namespace_is_a_host_error() -> None:
    with pytest.raises(HostError, match="does not exist"):
        Netlink("fxt-no-such-namespace")


@needs_root
async def test_netlink_is_callable_from_a_running_event_loop(uplink_netns: str) -> None:
    # pyroute2's sync IPRoute runs its own loop; Netlink's worker thread keeps that working.
    with Netlink(uplink_netns) as netlink:
        assert netlink.gateway_of("wan0", socket.AF_INET) == "192.0.2.1"
        netlink.set_link("peer0", mtu=1300)
        assert netlink.link("peer0").mtu == 1300
