"""Bonding mode end to end in network namespaces: real TUN, sockets, routes, rules, nftables, TLS.

Client namespace with two uplinks, each behind its own NATing ISP router, a server namespace with
a public-style address, and an internet host behind the server (see fluxify.lab.topology).
"""

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from fluxify.lab.iperf import iperf
from fluxify.lab.testbed import LinkCounters
from tests.client.bonding_harness import (
    Deployment,
    deployment,
    host_snapshot,
    snapshot_diff,
    wait_until,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, TUN, nftables"),
]

MB = 1_000_000


def uplink_tx_bytes(dep: Deployment) -> dict[str, int]:
    return {u.ifname: dep.bed.counters(dep.t.client_ns, u.ifname).tx_bytes for u in dep.t.uplinks}


def path_of(stats: dict[str, object], label: str) -> dict[str, object]:
    paths = stats["paths"]
    assert isinstance(paths, list)
    return next(p for p in paths if p["label"] == label)


def test_ping_and_a_checked_50_mb_transfer_use_both_uplinks(tmp_path: Path) -> None:
    """Both uplinks shaped to 40 Mbit/s, so that one cannot carry the transfer alone: over
    unshaped ones the load rightly rides one path (the tunnel, not the link, is the limit)."""
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        dep.start_server()
        for number in (1, 2):
            dep.bed.shape_uplink(number, 40)
        dep.start_client("alice")
        wait_until("ping v4 through the tunnel", dep.ping_internet)
        assert dep.ping_internet(v6=True, count=2)
        before = uplink_tx_bytes(dep)
        sent, received = dep.transfer(50 * MB)
        after = uplink_tx_bytes(dep)
        assert received["bytes"] == sent["bytes"] == 50 * MB
        assert received["sha256"] == sent["sha256"]
        # NAT on the server: the internet host sees the server, not the tunnel address.
        assert received["peer"].endswith(str(dep.t.server_internet_v4.ip))
        for ifname in before:  # measured: 27.6-27.8 MB each (wire bytes)
            assert after[ifname] - before[ifname] > 10 * MB, (ifname, before, after)


def test_transfer_survives_an_uplink_cut_and_the_uplink_is_used_again(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        dep.start_server()
        for number in (1, 2):
            dep.bed.shape_uplink(number, 40)  # ~10 s for 50 MB: time to cut mid-transfer
        dep.start_client("alice")
        wait_until("ping through the tunnel", dep.ping_internet)

        def cut_wan1() -> None:
            time.sleep(2.0)
            dep.bed.set_uplink(1, up=False)

        sent, received = dep.transfer(50 * MB, during=cut_wan1)
        assert received["sha256"] == sent["sha256"] and received["bytes"] == 50 * MB
        stats = dep.client_stats("alice")
        assert path_of(stats, "wan1")["alive"] is False
        assert path_of(stats, "wan2")["alive"] is True

        dep.bed.set_uplink(1, up=True)
        wait_until("wan1 alive again", lambda: path_of(dep.client_stats("alice"), "wan1")["alive"])
        before = uplink_tx_bytes(dep)["wan1"]
        # 10 MB, not less: the revived path ramps up from a fresh delay history, and over a
        # 5 MB transfer it carried between 0.9 and 2 MB (one run in four missed 1 MB)
        sent, received = dep.transfer(10 * MB)
        assert received["sha256"] == sent["sha256"]
        assert uplink_tx_bytes(dep)["wan1"] - before > 1 * MB


def test_client_gets_a_new_session_after_the_server_restarts(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        dep.start_server()
        dep.start_client("alice")
        wait_until("ping through the tunnel", dep.ping_internet)
        first_session = dep.client_stats("alice")["session_id"]
        assert dep.stop_server() == 0
        assert not dep.ping_internet()
        dep.start_server()
        wait_until("ping after the server restart", dep.ping_internet, timeout_s=30)
        wait_until(
            "the stats to show the new session",
            lambda: dep.client_stats("alice")["reconnects"] >= 1,
        )
        stats = dep.client_stats("alice")
        assert stats["reconnects"] >= 1
        assert stats["session_id"] != first_session
        assert dep.clients["alice"].poll() is None  # the same client process carried on


def test_stop_and_crash_recovery_leave_the_host_exactly_as_before(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        dep.start_server()
        before = host_snapshot(dep.bed, dep.t.client_ns)

        dep.start_client("alice")
        wait_until("ping through the tunnel", dep.ping_internet)
        assert host_snapshot(dep.bed, dep.t.client_ns) != before  # it did change the host
        assert dep.stop_client("alice", signal.SIGTERM) == 0
        assert snapshot_diff(before, host_snapshot(dep.bed, dep.t.client_ns)) == ""

        dep.start_client("alice")
        wait_until("ping through the tunnel", dep.ping_internet)
        dep.stop_client("alice", signal.SIGKILL)
        assert host_snapshot(dep.bed, dep.t.client_ns) != before  # a crash leaves rules behind
        dep.start_client("alice")  # ... which the next start repairs before changing anything
        wait_until("ping through the tunnel", dep.ping_internet)
        assert "undid" in dep.log("alice.log")
        assert dep.stop_client("alice", signal.SIGTERM) == 0
        assert snapshot_diff(before, host_snapshot(dep.bed, dep.t.client_ns)) == ""


def test_the_server_stop_removes_its_table_sysctls_and_tun(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        before = host_snapshot(dep.bed, dep.t.server_ns)
        dep.start_server()
        assert (
            "table inet fluxify" in dep.bed.run(dep.t.server_ns, ["nft", "list", "ruleset"]).stdout
        )
        assert dep.stop_server() == 0
        assert snapshot_diff(before, host_snapshot(dep.bed, dep.t.server_ns)) == ""


def test_bad_datagrams_are_dropped_and_counted_while_the_good_client_works(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        mallory_pki = dep.issue("mallory")
        dep.start_server()
        dep.start_client("alice")
        wait_until("ping through the tunnel", dep.ping_internet)
        alice_ip = dep.client_stats("alice")["client_ip"]
        rogue = Path(__file__).parent / "rogue_peer.py"
        report = dep.bed.run(
            dep.t.uplink(1).isp_ns,
            [sys.executable, str(rogue), str(mallory_pki), str(dep.t.server_v4.ip), alice_ip,
             str(dep.t.internet_host_v4.ip)],
        )  # fmt: skip
        assert "replay" in report.stdout
        assert dep.ping_internet(count=3)  # alice unaffected
        wait_until(
            "the drop counters",
            lambda: (
                {"replay", "bad_tag", "unknown_session", "too_short", "spoofed_source"}
                <= set(dep.server_stats()["drops"])
            ),
            timeout_s=5,
        )
        drops = dep.server_stats()["drops"]
        assert drops["replay"] == 1 and drops["bad_tag"] == 1 and drops["spoofed_source"] == 1
        assert drops["too_short"] == 2 and drops["unknown_session"] == 1
        assert dep.server is not None and dep.server.poll() is None
        assert dep.clients["alice"].poll() is None


def test_two_clients_get_their_own_addresses_and_reach_the_internet_and_each_other(
    tmp_path: Path,
) -> None:
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        dep.issue("bob")
        dep.start_server()
        bob_home = dep.bed.add_client_home()
        dep.start_client("alice")
        dep.start_client("bob", netns=bob_home)
        wait_until("alice's ping", dep.ping_internet)
        wait_until("bob's ping", lambda: dep.ping_internet(netns=bob_home))
        alice, bob = dep.client_stats("alice"), dep.client_stats("bob")
        assert alice["client_ip"] != bob["client_ip"]
        assert alice["client_ip6"] != bob["client_ip6"]
        assert dep.bed.ping(dep.t.client_ns, bob["client_ip"], count=2, timeout_s=2)
        assert dep.bed.ping(bob_home, alice["client_ip"], count=2, timeout_s=2)
        assert dep.bed.ping(bob_home, alice["client_ip6"], count=2, timeout_s=2)
        sessions = {s["identity"]: s for s in dep.server_stats()["sessions"]}
        assert set(sessions) == {"alice", "bob"}
        assert all(len(s["paths"]) == 2 for s in sessions.values())


def test_a_multi_homed_server_answers_from_the_address_the_client_used(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        peer_pki = dep.issue("carol")
        second = "198.18.0.2"  # a second address of the server, not its primary one
        dep.bed.run(dep.t.server_ns, ["ip", "addr", "add", f"{second}/24", "dev", "br0"])
        dep.start_server()
        peer = Path(__file__).parent / "connected_peer.py"
        result = dep.bed.run(
            dep.t.uplink(1).isp_ns,
            [sys.executable, str(peer), str(peer_pki), str(dep.t.server_v4.ip), second],
        )
        assert result.stdout.strip() == "echo", result.stderr


def test_unequal_uplinks_carry_traffic_in_proportion_to_their_capacity(tmp_path: Path) -> None:
    """40 + 10 Mbit/s: about a fifth of the bytes on the small uplink, each way (1 : 1 would be
    half, and would cap the bond at twice the small link)."""
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        dep.start_server()
        dep.bed.shape_uplink(1, 40)
        dep.bed.shape_uplink(2, 10)
        dep.start_client("alice")
        wait_until("ping through the tunnel", dep.ping_internet)

        def counters() -> dict[str, LinkCounters]:
            return {u.ifname: dep.bed.counters(dep.t.client_ns, u.ifname) for u in dep.t.uplinks}

        before = counters()
        sent, received = dep.transfer(25 * MB)
        after = counters()
        assert received["sha256"] == sent["sha256"]
        up = {name: after[name].tx_bytes - before[name].tx_bytes for name in after}
        assert 0.08 < up["wan2"] / sum(up.values()) < 0.35, up
        stats = dep.client_stats("alice")
        # the engine's rate model of each path: learnt from the feedback while both were loaded
        assert path_of(stats, "wan2")["rate_mbit"] < path_of(stats, "wan1")["rate_mbit"]

        before = counters()
        iperf(
            dep.bed,
            client_ns=dep.t.client_ns,
            server_ns=dep.t.internet_ns,
            target=str(dep.t.internet_host_v4.ip),
            seconds=5,
            reverse=True,
        )
        after = counters()
        down = {name: after[name].rx_bytes - before[name].rx_bytes for name in after}
        assert 0.08 < down["wan2"] / sum(down.values()) < 0.35, down
