"""Flag value parsers: positional lists keep every value; set-like lists say so."""

import argparse
import socket
from ipaddress import ip_address
from typing import Any

import pytest

from fluxify.cli import lab_parser, parse_client_args
from fluxify.client.uplinks import plan_uplinks
from fluxify.flags import address_list, csv_items, host_list, interface_list, number_list


def test_csv_items_keep_repeats_in_order() -> None:
    assert csv_items(" a, b,,a ,") == ("a", "b", "a")


def test_two_identical_lte_modems_keep_one_gateway_each() -> None:
    config = parse_client_args(
        [
            "-b",
            "-server",
            "vpn.example",
            "-ifaces",
            "wwan0,wwan1",
            "-gws",
            "192.168.8.1,192.168.8.1",
        ]
    )
    assert config.gateways == (ip_address("192.168.8.1"), ip_address("192.168.8.1"))

    class NoDiscovery:
        def gateway_of(self, ifname: str, family: int) -> str | None:
            raise AssertionError(f"{ifname}: the gateway was given, nothing to discover")

    netlink: Any = NoDiscovery()
    plans = plan_uplinks(netlink, config.ifaces, socket.AF_INET, gateways=config.gateways)
    assert [(p.ifname, p.gateway, p.table) for p in plans] == [
        ("wwan0", "192.168.8.1", plans[0].table),
        ("wwan1", "192.168.8.1", plans[0].table + 1),
    ]


def test_source_ips_pair_by_position_with_repeats() -> None:
    assert address_list("10.0.0.2,10.0.0.2,10.0.0.3") == tuple(
        ip_address(a) for a in ("10.0.0.2", "10.0.0.2", "10.0.0.3")
    )


def test_an_interface_listed_twice_is_refused_by_name() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="'eth0' is listed twice"):
        interface_list("eth0,wlan0,eth0")


def test_lab_rates_shape_every_uplink() -> None:
    ns = lab_parser().parse_args(["up", "--rate", "50,50", "--delay", "10,10", "--loss", "0,0"])
    assert (ns.rate, ns.delay, ns.loss) == ((50.0, 50.0), (10.0, 10.0), (0.0, 0.0))
    assert number_list("1,1,2") == (1.0, 1.0, 2.0)


def test_certificate_hosts_are_a_set() -> None:
    assert host_list("a.example,10.0.0.1,a.example") == ("a.example", "10.0.0.1")
