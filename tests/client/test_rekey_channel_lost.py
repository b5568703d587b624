"""Feature rekey end to end when the control channel is lost in the middle of a rekey.

The client's packets to the control port are dropped (an nft table of the test's own in the
client namespace) until the server has offered an epoch whose acknowledgement cannot arrive: the
client already sends under epoch n + 1, the server still under n. Then the channel's connection
is killed (``ss -K``; its RST is dropped too, so the server does not hear of it) and the control
port let through again. The transfer running all along must arrive intact with no key drop, the
channel must come back by itself, the pending rekey complete and new ones follow, in one session.
"""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fluxify.server.config import DEFAULT_CONTROL_PORT
from tests.client.bonding_harness import Deployment, deployment, wait_until
from tests.client.test_rekey_transfer import (
    key_drops,
    server_session,
    start_rekeying,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, TUN, nftables"),
]

MB = 1_000_000
CUT_TABLE = "lab_channel_cut"  # the test's own; the client's table is "fluxify"
ATTACHED = "channel of 'alice' attached"
SETTLE_S = 40.0  # generous: a busy 2-core box, one-second stats, a 1-2 s channel back-off


@contextmanager
def control_port_dropped(dep: Deployment) -> Iterator[Callable[[], None]]:
    """Drop what the client namespace sends to the control port; yields a call that lets it
    through again. The table is gone on leaving, whatever happened."""
    netns = dep.t.client_ns

    def lift() -> None:
        if CUT_TABLE in dep.bed.run(netns, ["nft", "list", "tables"]).stdout:
            dep.bed.run(netns, ["nft", "delete", "table", "inet", CUT_TABLE])

    dep.bed.run(netns, ["nft", "add", "table", "inet", CUT_TABLE])
    try:
        dep.bed.run(
            netns,
            ["nft", f"add chain inet {CUT_TABLE} out {{ type filter hook output priority 0 ; }}"],
        )
        dep.bed.run(
            netns, ["nft", f"add rule inet {CUT_TABLE} out tcp dport {DEFAULT_CONTROL_PORT} drop"]
        )
        yield lift
    finally:
        lift()


def held_over_server_writes(
    condition: Callable[[], bool], dep: Deployment, writes: int
) -> Callable[[], bool]:
    """A predicate for wait_until: ``condition`` held at each of ``writes`` successive rewrites
    of the server's stats (once a second), so no rekey completing in the meantime fools it."""
    stats = dep.workdir / "server-state" / "server-stats.json"
    seen: list[int] = []

    def check() -> bool:
        if not condition():
            seen.clear()
            return False
        stamp = stats.stat().st_mtime_ns
        if not seen or seen[-1] != stamp:
            seen.append(stamp)
        return len(seen) > writes

    return check


def epochs(dep: Deployment) -> tuple[int, int]:
    """(the epoch the client sends under, the epoch the server sends under)."""
    return dep.client_stats("alice")["key_epoch"], server_session(dep)["key_epoch"]


def test_a_channel_lost_between_a_rekey_and_its_ack_comes_back_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    with deployment(tmp_path, prefix="fxr") as dep:
        start_rekeying(dep, 30)  # ~20 s for 150 MB: the cut and the recovery
        session_id = server_session(dep)["session_id"]
        seen: dict[str, int] = {}

        def cut_the_channel_mid_rekey() -> None:
            with control_port_dropped(dep) as lift:

                def offer_unacknowledged() -> bool:
                    client, server = epochs(dep)
                    return client == server + 1

                wait_until(
                    "an epoch the client took and the server never heard acknowledged",
                    held_over_server_writes(offer_unacknowledged, dep, 3),
                    SETTLE_S,
                )
                seen["client_epoch"], seen["server_epoch"] = epochs(dep)
                seen["rekeys"] = server_session(dep)["rekeys"]
                killed = dep.bed.run(
                    dep.t.client_ns,
                    [
                        "ss",
                        "-K",
                        "-tnH",
                        "state",
                        "established",
                        "dst",
                        str(dep.t.server_v4.ip),
                        "dport",
                        "=",
                        f":{DEFAULT_CONTROL_PORT}",
                    ],
                ).stdout
                assert f":{DEFAULT_CONTROL_PORT}" in killed, killed
                lift()  # the kill's RST went out (and was dropped) before ss returned
            wait_until(
                "the channel to be attached again",
                lambda: dep.log("server.log").count(ATTACHED) >= 2,
                SETTLE_S,
            )
            wait_until(  # the offer the cut left pending, then at least one new one
                "rekeys to go on over the new channel",
                lambda: server_session(dep)["rekeys"] >= seen["rekeys"] + 2,
                SETTLE_S,
            )

        sent, received = dep.transfer(150 * MB, during=cut_the_channel_mid_rekey)
        print(f"cut at epochs {seen}; {sent}")
        assert received["bytes"] == sent["bytes"] == 150 * MB
        assert received["sha256"] == sent["sha256"]
        assert seen["client_epoch"] == seen["server_epoch"] + 1

        def in_step_past_the_cut() -> bool:
            client, server = epochs(dep)
            return client == server > seen["client_epoch"]

        wait_until("both ends past the cut, under one epoch", in_step_past_the_cut, SETTLE_S)
        session = server_session(dep)
        assert session["session_id"] == session_id  # the same session, never renewed
        client = dep.client_stats("alice")
        assert client["reconnects"] == 0
        assert key_drops(client["drops"]) == {}, client["drops"]
        assert key_drops(dep.server_stats()["drops"]) == {}, dep.server_stats()["drops"]

        assert dep.stop_client("alice") == 0  # the new channel carries the goodbye
        wait_until("the session to be freed", lambda: not dep.server_stats()["sessions"], 5.0)
        assert dep.server_stats()["goodbyes"] == 1
