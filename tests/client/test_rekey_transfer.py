"""Feature rekey end to end in network namespaces: a long transfer across forced rekeys, goodbye,
revocation pushed to a running client, and a v1 client that sees none of it."""

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fluxify.lab.deployment import BIN
from tests.client.bonding_harness import Deployment, deployment, wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, TUN, nftables"),
]

MB = 1_000_000
REKEY_EVERY = ("-rekey-interval", "2s")  # the smallest the flag takes is 1s
# Drops that would mean a key epoch was missing, wrong or used up: none may happen.
KEY_DROPS = ("unknown_key", "bad_tag", "key_exhausted")


def server_session(dep: Deployment) -> dict[str, Any]:
    sessions = dep.server_stats()["sessions"]
    assert len(sessions) == 1, sessions
    session: dict[str, Any] = sessions[0]
    return session


def key_drops(drops: dict[str, int]) -> dict[str, int]:
    return {reason: drops[reason] for reason in KEY_DROPS if drops.get(reason)}


def start_rekeying(dep: Deployment, uplink_mbit: float) -> None:
    """alice's session with forced rekeys over uplinks shaped to ``uplink_mbit``, running: the
    tunnel pings, the server holds the session and its channel has brought a first rekey."""
    dep.issue("alice")
    dep.start_server(REKEY_EVERY)
    for number in (1, 2):
        dep.bed.shape_uplink(number, uplink_mbit)
    dep.start_client("alice", extra_args=REKEY_EVERY)
    wait_until("ping through the tunnel", dep.ping_internet)
    wait_until("the session at the server", lambda: bool(dep.server_stats()["sessions"]))
    wait_until("the channel and a first rekey", lambda: server_session(dep)["rekeys"] >= 1)


def test_a_long_transfer_across_forced_rekeys_arrives_intact_and_goodbye_frees_it(
    tmp_path: Path,
) -> None:
    with deployment(tmp_path, prefix="fxk") as dep:
        start_rekeying(dep, 40)  # ~10 s for 80 MB: room for several epochs
        before = server_session(dep)["rekeys"]
        sent, received = dep.transfer(80 * MB)
        after = server_session(dep)
        wait_until(  # the client writes its stats once a second
            "the client's stats to count the same epochs",
            lambda: dep.client_stats("alice")["rekeys"] >= after["rekeys"],
            5.0,
        )
        client = dep.client_stats("alice")
        print(f"rekeys during the transfer: {after['rekeys'] - before}, {sent}")
        assert received["bytes"] == sent["bytes"] == 80 * MB
        assert received["sha256"] == sent["sha256"]
        assert after["rekeys"] - before >= 3, (before, after["rekeys"])
        assert client["key_epoch"] >= 3
        assert key_drops(client["drops"]) == {}, client["drops"]
        assert key_drops(dep.server_stats()["drops"]) == {}, dep.server_stats()["drops"]

        assert dep.stop_client("alice") == 0
        wait_until("the session to be freed", lambda: not dep.server_stats()["sessions"], 5.0)
        assert dep.server_stats()["goodbyes"] == 1
        assert "the client said goodbye" in dep.log("server.log")


def test_a_revocation_reaches_the_running_client_which_stops_for_good(tmp_path: Path) -> None:
    with deployment(tmp_path, prefix="fxk") as dep:
        dep.issue("alice")
        dep.start_server()
        dep.start_client("alice")
        wait_until("ping through the tunnel", dep.ping_internet)
        wait_until("the channel", lambda: "channel of 'alice' attached" in dep.log("server.log"))
        subprocess.run(
            [BIN / "fluxify-server", "-pki", dep.workdir / "pki", "-revoke", "alice"],
            check=True,
            capture_output=True,
        )
        process = dep.clients.pop("alice")
        assert process.wait(timeout=15) == 1  # the client exits by itself
        log = dep.log("alice.log")
        lines = [line for line in log.splitlines() if "revoked the certificate" in line]
        assert len(lines) == 1, log[-2000:]
        assert "not reconnecting" in lines[0]
        assert "new session" not in log
        wait_until("the session to end", lambda: not dep.server_stats()["sessions"], 5.0)


def test_a_v1_client_gets_no_channel_and_one_key_as_before(tmp_path: Path) -> None:
    with deployment(tmp_path, prefix="fxk") as dep:
        dep.issue("alice")
        dep.start_server(REKEY_EVERY)
        dep.start_client("alice", extra_args=("-protocol", "v1"))
        wait_until("ping through the tunnel", dep.ping_internet)
        wait_until("the session at the server", lambda: bool(dep.server_stats()["sessions"]))
        sent, received = dep.transfer(10 * MB)
        assert received["sha256"] == sent["sha256"] and received["bytes"] == 10 * MB
        session = server_session(dep)
        assert session["bond_v2"] is False
        assert session["key_epoch"] is None and session["rekeys"] == 0
        client = dep.client_stats("alice")
        assert client["key_epoch"] is None and client["rekeys"] == 0
        assert "channel" not in dep.log("server.log")
        dep.stop_client("alice", signal.SIGTERM)
        # no goodbye from v1: the session stays until its idle expiry
        assert len(dep.server_stats()["sessions"]) == 1
