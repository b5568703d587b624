"""Uplink routing sets the rp_filter of the uplink itself, also for a VLAN name with a dot."""

from typing import cast

from fluxify.client.uplinks import UplinkPlan, apply_uplink_routing
from fluxify.linux import sysctl
from fluxify.linux.journal import Journal
from fluxify.linux.routing import Route, Rule


class RecordingJournal:
    def __init__(self) -> None:
        self.sysctls: list[str] = []

    def add_route(self, route: Route) -> None:
        pass

    def add_rule(self, rule: Rule) -> None:
        pass

    def set_sysctl(self, name: str, value: str) -> None:
        self.sysctls.append(name)


def test_a_vlan_uplinks_rp_filter_path_keeps_the_dot_of_its_name() -> None:
    journal = RecordingJournal()
    plans = [UplinkPlan(0, "eth0.100", "192.0.2.1", None)]
    apply_uplink_routing(cast(Journal, journal), plans, "198.51.100.7")
    assert [sysctl.sysctl_path(n).as_posix() for n in journal.sysctls] == [
        "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    ]
