"""The bond engine's v2 extension is negotiated: a peer that speaks only v1 still gets the v1
protocol byte for byte, in both roles; and a backup uplink stays quiet until it is needed.

Real namespaces, TUN, routes, nftables and TLS (see fluxify.lab.topology). A Go peer is not
available here; ``-protocol v1`` makes our own client or server offer / accept no extension,
which is what a Go v1 peer does on the control plane, and the data plane then runs the v1 path
of the engine (no path fields, unnumbered control packets, no feedback).
"""

import os
from pathlib import Path

import pytest

from tests.client.bonding_harness import Deployment, deployment, wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, TUN, nftables"),
]

MB = 1_000_000


def assert_tunnel_works(dep: Deployment) -> None:
    wait_until("ping v4 through the tunnel", dep.ping_internet)
    assert dep.ping_internet(v6=True, count=2)
    sent, received = dep.transfer(10 * MB)
    assert received["bytes"] == sent["bytes"] == 10 * MB
    assert received["sha256"] == sent["sha256"]


def test_a_v1_client_gets_v1_from_our_server(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        dep.start_server()
        dep.start_client("alice", extra_args=("-protocol", "v1"))
        assert_tunnel_works(dep)
        assert dep.client_stats("alice")["bond_v2"] is False
        session = dep.server_stats()["sessions"][0]
        assert session["bond_v2"] is False
        assert "control_replay" not in dep.server_stats()["drops"]


def test_our_client_gets_v1_from_a_v1_server(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        dep.start_server(extra_args=("-protocol", "v1"))
        dep.start_client("alice")
        assert_tunnel_works(dep)
        stats = dep.client_stats("alice")
        assert stats["bond_v2"] is False
        assert all(p["alive"] for p in stats["paths"])


def test_a_backup_uplink_carries_no_data_until_the_primary_dies(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        dep.issue("alice")
        dep.start_server()
        for number in (1, 2):
            dep.bed.shape_uplink(number, 20)
        dep.start_client("alice", extra_args=("-backup", "wan2"))
        wait_until("ping through the tunnel", dep.ping_internet)

        def tx_bytes(ifname: str) -> int:
            return dep.bed.counters(dep.t.client_ns, ifname).tx_bytes

        before = {name: tx_bytes(name) for name in ("wan1", "wan2")}
        sent, received = dep.transfer(5 * MB)  # below what wan1 alone carries: no spill
        assert received["sha256"] == sent["sha256"]
        used = {name: tx_bytes(name) - before[name] for name in before}
        assert used["wan1"] > 5 * MB
        assert used["wan2"] < 0.01 * used["wan1"], used  # heartbeats only (and a start-up few)
        paths = {p["label"]: p for p in dep.client_stats("alice")["paths"]}
        assert paths["wan2"]["priority"] == "backup" and paths["wan1"]["priority"] == "primary"

        dep.bed.set_uplink(1, up=False)  # (how fast: the engine tests, on a virtual clock)
        wait_until("ping by the backup", dep.ping_internet, timeout_s=30)
        sent, received = dep.transfer(2 * MB)
        assert received["sha256"] == sent["sha256"]
