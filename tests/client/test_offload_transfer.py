"""Offloads end to end: checked TCP transfers (SHA-256) through the tunnel, IPv4 and IPv6, up and
down, with TUN TSO and UDP GSO/GRO on at both ends and with a plain-TUN peer at either end (the
v1 client, a server with ``-no-offload``). Between two offloaded ends the session negotiates
``csum-partial``: TCP segments cross the tunnel with partial checksums that the receiving kernel
finishes; towards a plain-TUN peer every split packet carries complete checksums. Either way no
namespace counts a TCP checksum error (``nstat``)."""

import json
import os
from pathlib import Path

import pytest

from fluxify.lab.bench_integrity import checked_transfer, csum_errors, increases
from fluxify.lab.deployment import Deployment, deployment, wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, TUN, nftables"),
]

MB = 1_000_000
SIZE = 20 * MB


def _transfer(dep: Deployment, receiver_ns: str, sender_ns: str, host: str, port: int) -> None:
    check = checked_transfer(
        dep, receiver_ns=receiver_ns, sender_ns=sender_ns, host=host, port=port, size=SIZE
    )
    assert check.ok, (host, check.problem())


def _tun_average(dep: Deployment, netns: str, direction: str) -> float:
    """Bytes per packet through Fluxify's TUN: read by Fluxify ("tx": TSO super-packets, or one
    IP packet each without), written by it ("rx": coalesced segments, or one each)."""
    links = json.loads(dep.bed.run(netns, ["ip", "-j", "-s", "link", "show"]).stdout)
    tun = next(link for link in links if link.get("link_type") == "none")
    counters = tun["stats64"][direction]
    return float(counters["bytes"]) / max(1, counters["packets"])


@pytest.mark.parametrize(
    ("client_args", "server_args", "client_tso", "server_tso"),
    [
        ((), (), True, True),
        (("-protocol", "v1", "-no-offload"), (), False, True),
        ((), ("-no-offload",), True, False),
    ],
    ids=["both-offloaded-csum-partial", "plain-v1-client", "plain-server"],
)
def test_checked_transfers_both_ways_v4_and_v6_without_checksum_errors(
    tmp_path: Path,
    client_args: tuple[str, ...],
    server_args: tuple[str, ...],
    client_tso: bool,
    server_tso: bool,
) -> None:
    partial = client_tso and server_tso  # csum-partial: both TUNs take NEEDS_CSUM writes
    with deployment(tmp_path, prefix="fg") as dep:
        dep.issue("alice")
        dep.start_server(server_args)
        dep.start_client("alice", extra_args=client_args)
        wait_until("ping v4 through the tunnel", dep.ping_internet)
        wait_until("ping v6 through the tunnel", lambda: dep.ping_internet(v6=True))
        assert ("TUN TSO on" in dep.log("server.log")) == server_tso, dep.log("server.log")
        assert ("TUN TSO on" in dep.log("alice.log")) == client_tso, dep.log("alice.log")
        assert ("partial TCP checksums on" in dep.log("alice.log")) == partial
        stats = json.loads((dep.client_state("alice") / "client-stats.json").read_text())
        t = dep.t
        # Up: client → internet host (through the server's NAT). Down: server → client.
        _transfer(dep, t.internet_ns, t.client_ns, str(t.internet_host_v4.ip), 5301)
        _transfer(dep, t.internet_ns, t.client_ns, str(t.internet_host_v6.ip), 5302)
        _transfer(dep, t.client_ns, t.server_ns, stats["client_ip"], 5303)
        _transfer(dep, t.client_ns, t.server_ns, stats["client_ip6"], 5304)
        for netns in (t.client_ns, t.server_ns, t.internet_ns):
            assert increases({}, csum_errors(dep.bed, netns)) == {}, netns
        # The TUN really moved super-packets (TUN_MTU is 1400) both ways where offloads are on.
        for netns, offloaded in ((t.client_ns, client_tso), (t.server_ns, server_tso)):
            assert (_tun_average(dep, netns, "tx") > 3000) == offloaded, netns
            assert (_tun_average(dep, netns, "rx") > 3000) == offloaded, netns
