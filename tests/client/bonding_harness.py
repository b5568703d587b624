"""Test helpers for the bonding end-to-end tests: host snapshots and their comparison.

The deployment itself (testbed, PKI, server and client processes) is ``fluxify.lab.deployment``.
"""

import difflib

from fluxify.lab.deployment import Deployment, deployment, wait_until
from fluxify.lab.testbed import Testbed

__all__ = ["Deployment", "deployment", "host_snapshot", "snapshot_diff", "wait_until"]


def host_snapshot(bed: Testbed, netns: str) -> dict[str, str]:
    """What a client may change in its namespace, as the kernel reports it.

    First waits for IPv6 duplicate address detection to finish: the kernel adds link-local
    routes when it does, and that is not ours to compare.
    """
    wait_until(
        f"IPv6 addresses in {netns} to settle",
        lambda: not bed.run(netns, ["ip", "-6", "addr", "show", "tentative"]).stdout.strip(),
    )

    def run(*argv: str) -> str:
        return bed.run(netns, list(argv)).stdout

    uplinks = [u.ifname for u in bed.topology.uplinks] if netns == bed.topology.client_ns else []
    return {
        "routes4": run("ip", "route", "show", "table", "all"),
        "routes6": run("ip", "-6", "route", "show", "table", "all"),
        "rules4": run("ip", "rule"),
        "rules6": run("ip", "-6", "rule"),
        "links": run("ip", "-br", "link"),
        "nftables": run("nft", "list", "ruleset"),
        "sysctls": run(
            "sysctl",
            "net.ipv4.ip_forward",
            "net.ipv6.conf.all.forwarding",
            *(f"net.ipv4.conf.{name}.rp_filter" for name in uplinks),
        ),
    }


def snapshot_diff(before: dict[str, str], after: dict[str, str]) -> str:
    """The lines that differ, per item, for a readable assertion message ("" when equal)."""
    out = []
    for key, old in before.items():
        if old != after.get(key):
            diff = difflib.unified_diff(
                old.splitlines(), after.get(key, "").splitlines(), lineterm="", n=0
            )
            out.append(f"{key}:\n" + "\n".join(diff))
    return "\n".join(out)
