"""A client-like list of host changes, shared by the journal tests and their crash child."""

import socket
import subprocess
import sys
import time
from pathlib import Path

from fluxify.linux.journal import Journal
from fluxify.linux.nftables import uplink_ruleset
from fluxify.linux.routing import Route, Rule
from fluxify.linux.tun import Tun

TUN_NAME = "fxtun0"
OWNER = "client"


def snapshot(netns: str) -> dict[str, str]:
    """Everything the journal may touch, as the kernel reports it."""

    def run(*argv: str) -> str:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def sysctl(name: str) -> str:
        return run("ip", "netns", "exec", netns, "sysctl", "-n", name)

    return {
        "routes4": run("ip", "-n", netns, "route", "show", "table", "all"),
        "routes6": run("ip", "-n", netns, "-6", "route", "show", "table", "all"),
        "rules4": run("ip", "-n", netns, "rule"),
        "rules6": run("ip", "-n", netns, "-6", "rule"),
        "addresses": run("ip", "-n", netns, "address"),
        "nftables": run("ip", "netns", "exec", netns, "nft", "list", "ruleset"),
        "forward4": sysctl("net.ipv4.ip_forward"),
        "forward6": sysctl("net.ipv6.conf.all.forwarding"),
        "rp_filter": sysctl("net.ipv4.conf.wan0.rp_filter"),
    }


def apply_changes(journal: Journal, netns: str) -> Tun:
    """What a bonding client does to its host, against ``uplink_netns``."""
    journal.set_sysctl("net.ipv4.ip_forward", "1")
    journal.set_sysctl("net.ipv6.conf.all.forwarding", "1")
    journal.set_sysctl("net.ipv4.conf.wan0.rp_filter", "2")
    tun = Tun.open(TUN_NAME, netns=netns)
    journal.set_link(TUN_NAME, up=True, mtu=1400)
    journal.add_address(TUN_NAME, "10.8.0.2/24")
    journal.add_address(TUN_NAME, "fd00:8::2/64")
    journal.set_link("wan0", mtu=1300)
    journal.add_route(Route("198.18.0.1/32", gateway="192.0.2.1", ifname="wan0"))
    journal.add_route(Route("0.0.0.0/0", gateway="192.0.2.1", ifname="wan0", table=101))
    journal.add_rule(Rule(priority=1000, table=101, src="192.0.2.2/32"))
    journal.add_rule(Rule(priority=1000, table=101, family=socket.AF_INET6, fwmark=7))
    journal.replace_route(Route("0.0.0.0/0", ifname=TUN_NAME, metric=100))
    journal.replace_route(Route("::/0", ifname=TUN_NAME))
    (doc_route,) = [
        r for r in journal.netlink.routes(socket.AF_INET, 254) if r.dst == "203.0.113.0/24"
    ]
    journal.delete_route(doc_route)
    journal.apply_nftables(uplink_ruleset(["wan0"]))
    return tun


def crash_child(netns: str, state_dir: str) -> None:
    """Apply the changes, say so, and wait to be SIGKILLed."""
    journal = Journal(OWNER, netns=netns, state_dir=Path(state_dir))
    apply_changes(journal, netns)
    print("ready", flush=True)
    time.sleep(60)


if __name__ == "__main__":
    crash_child(sys.argv[1], sys.argv[2])
