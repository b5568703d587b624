import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import ANY

import pytest
from pyroute2 import NetNS

from fluxify.errors import HostError
from fluxify.linux.journal import Journal
from fluxify.linux.routing import Nexthop, Route, Rule
from tests.linux.conftest import ip, needs_root
from tests.linux.journal_scenario import OWNER, apply_changes, snapshot

DAD_TIMEOUT_S = 30.0  # DAD takes about a second; a loaded machine may take much longer


def wait_for_dad(netns: str) -> None:
    """Until no IPv6 address in ``netns`` is tentative: the kernel adds routes when DAD ends.

    Otherwise a snapshot taken during DAD differs from one taken after it for reasons that
    have nothing to do with the journal (the fe80:: addresses of a fresh veth).
    """
    deadline = time.monotonic() + DAD_TIMEOUT_S
    while ip("-n", netns, "-6", "address", "show", "tentative").strip():
        if time.monotonic() > deadline:
            pytest.fail(f"IPv6 addresses in {netns} still tentative after {DAD_TIMEOUT_S:g} s")
        time.sleep(0.05)


@pytest.fixture
def client_netns(uplink_netns: str) -> str:
    """An uplink namespace with one pre-existing route for the journal to delete, DAD done."""
    ip("-n", uplink_netns, "route", "add", "203.0.113.0/24", "via", "192.0.2.1", "dev", "wan0")
    wait_for_dad(uplink_netns)
    return uplink_netns


@needs_root
def test_undo_restores_the_snapshot_exactly(client_netns: str, tmp_path: Path) -> None:
    before = snapshot(client_netns)
    with Journal(OWNER, netns=client_netns, state_dir=tmp_path) as journal:
        tun = apply_changes(journal, client_netns)
        during = snapshot(client_netns)
        assert "default dev fxtun0 proto static metric 100" in during["routes4"]
        assert "default dev fxtun0" in during["routes6"]
        assert "203.0.113.0/24" not in during["routes4"]
        assert "table inet fluxify" in during["nftables"]
        assert during["forward4"].strip() == "1"
        records = json.loads((tmp_path / "client.json").read_text())["inverses"]
        assert len(records) == len(journal.pending) == 15
        tun.close()  # as on a real stop: the TUN goes first, its routes with it
    assert snapshot(client_netns) == before
    assert not (tmp_path / "client.json").exists()


@needs_root
def test_undo_with_the_tun_still_open(client_netns: str, tmp_path: Path) -> None:
    before = snapshot(client_netns)
    journal = Journal(OWNER, netns=client_netns, state_dir=tmp_path)
    with apply_changes(journal, client_netns):
        journal.undo()
        journal.close()
        after = snapshot(client_netns)
    assert after["routes4"] == before["routes4"]
    assert after["routes6"] == before["routes6"]
    assert after["rules4"] == before["rules4"]


@needs_root
def test_repair_after_sigkill_restores_the_snapshot(client_netns: str, tmp_path: Path) -> None:
    before = snapshot(client_netns)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.linux.journal_scenario", client_netns, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(HostError, match="Another fluxify client is running"):
            Journal(OWNER, netns=client_netns, state_dir=tmp_path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert snapshot(client_netns) != before
    with Journal(OWNER, netns=client_netns, state_dir=tmp_path) as journal:
        assert journal.repair() == 15
        assert journal.repair() == 0
    wait_for_dad(client_netns)
    assert snapshot(client_netns) == before


@needs_root
def test_a_change_that_fails_is_not_journaled(uplink_netns: str, tmp_path: Path) -> None:
    with Journal(OWNER, netns=uplink_netns, state_dir=tmp_path) as journal:
        existing = Route("0.0.0.0/0", gateway="192.0.2.1", ifname="wan0", metric=100)
        with pytest.raises(HostError, match="exists"):
            journal.add_route(existing)
        assert journal.pending == []
        assert not (tmp_path / "client.json").exists()
    # Undo did not delete the pre-existing route the failed add collided with.
    assert "default via 192.0.2.1 dev wan0" in ip("-n", uplink_netns, "route")


@needs_root
def test_undo_tolerates_changes_already_gone(uplink_netns: str, tmp_path: Path) -> None:
    with Journal(OWNER, netns=uplink_netns, state_dir=tmp_path) as journal:
        journal.add_route(Route("198.18.0.9/32", gateway="192.0.2.1", ifname="wan0"))
        journal.add_address("wan0", "10.77.0.1/24")
        journal.set_sysctl("net.ipv4.conf.peer0.rp_filter", "2")
        ip("-n", uplink_netns, "route", "del", "198.18.0.9/32")
        ip("-n", uplink_netns, "address", "del", "10.77.0.1/24", "dev", "wan0")
        ip("-n", uplink_netns, "link", "del", "peer0")  # takes wan0 and its routes with it
    assert journal.pending == []


@needs_root
def test_repair_of_a_journal_whose_namespace_is_gone(netns: str, tmp_path: Path) -> None:
    leftover = {
        "version": 1,
        "owner": OWNER,
        "netns": "fxt-gone-long-ago",
        "inverses": [
            {"kind": "sysctl", "name": "net.ipv4.ip_forward", "value": "0"},
        ],
    }
    (tmp_path / "client.json").write_text(json.dumps(leftover))
    with Journal(OWNER, netns=netns, state_dir=tmp_path) as journal:
        assert journal.repair() == 1
    assert not (tmp_path / "client.json").exists()


def test_owner_must_be_a_plain_word(tmp_path: Path) -> None:
    with pytest.raises(HostError):
        Journal("../etc", state_dir=tmp_path)


@needs_root
def test_journal_records_are_plain_json(uplink_netns: str, tmp_path: Path) -> None:
    with Journal(OWNER, netns=uplink_netns, state_dir=tmp_path) as journal:
        journal.add_route(Route("198.18.0.9/32", gateway="192.0.2.1", ifname="wan0"))
        saved = json.loads((tmp_path / "client.json").read_text())
        assert saved["netns"] == uplink_netns
        (record,) = saved["inverses"]
        assert record["kind"] == "route" and record["action"] == "delete"
        assert record["route"]["dst"] == "198.18.0.9/32"
        assert Route.from_record(record["route"]).family == socket.AF_INET


@needs_root
def test_replace_without_a_previous_route_is_undone_by_delete(
    uplink_netns: str, tmp_path: Path
) -> None:
    before = snapshot_routes(uplink_netns)
    with Journal(OWNER, netns=uplink_netns, state_dir=tmp_path) as journal:
        journal.replace_route(Route("::/0", gateway="2001:db8:5::1", ifname="wan0", table=300))
        journal.replace_route(Route("0.0.0.0/0", gateway="192.0.2.1", ifname="wan0", metric=5))
        assert journal.pending[0]["previous"] == []
        assert "table 300" in ip("-n", uplink_netns, "-6", "route", "show", "table", "all")
    assert snapshot_routes(uplink_netns) == before


def snapshot_routes(netns: str) -> tuple[str, str]:
    return (
        ip("-n", netns, "route", "show", "table", "all"),
        ip("-n", netns, "-6", "route", "show", "table", "all"),
    )


# Devices that vanish while Fluxify runs (a USB modem unplugged) -------------------------------

MULTIPATH6 = Route(
    "2001:db8:99::/64",
    table=300,
    metric=50,
    nexthops=(Nexthop("2001:db8:1::1", "d1"), Nexthop("2001:db8:2::1", "d2")),
)


@pytest.fixture
def two_uplinks(netns: str) -> str:
    """``netns`` plus veth pairs ``d1``/``p1`` and ``d2``/``p2``, each with addresses."""
    for n in ("1", "2"):
        ip("-n", netns, "link", "add", f"d{n}", "type", "veth", "peer", "name", f"p{n}")
        ip("-n", netns, "link", "set", f"d{n}", "up")
        ip("-n", netns, "link", "set", f"p{n}", "up")
        ip("-n", netns, "addr", "add", f"10.{n}.0.2/24", "dev", f"d{n}")
        ip("-n", netns, "addr", "add", f"2001:db8:{n}::2/64", "dev", f"d{n}", "nodad")
    return netns


def kernel_routes(netns: str, family: int, table: int) -> list[tuple[str, int, list[int]]]:
    """``(dst/len, metric, [oif, ...])`` of every route in ``table``, read with pyroute2."""
    with NetNS(netns) as nsr:
        msgs = [m for m in nsr.get_routes(family=family) if m.get("table") == table]
    return [
        (
            f"{m.get('dst') or ('::' if family == socket.AF_INET6 else '0.0.0.0')}/{m['dst_len']}",
            m.get("priority") or 0,
            [hop["oif"] for hop in m.get("multipath") or ()] or [m.get("oif")],
        )
        for m in msgs
        if m["type"] == 1  # RTN_UNICAST: not the kernel's local/multicast entries
    ]


@pytest.mark.parametrize("via", ["undo", "repair"])
@needs_root
def test_what_is_left_of_a_multipath_route_whose_device_vanished_is_deleted(
    two_uplinks: str, tmp_path: Path, via: str
) -> None:
    # Routes sharing the prefix but not the table or the metric are not ours: they stay.
    for table, metric in (("300", "60"), ("301", "50")):
        ip(
            *("-n", two_uplinks, "-6", "route", "add", "2001:db8:99::/64", "table", table),
            *("metric", metric, "via", "2001:db8:2::1", "dev", "d2"),
        )
    journal = Journal(OWNER, netns=two_uplinks, state_dir=tmp_path)
    try:
        journal.add_route(MULTIPATH6)
        ip("-n", two_uplinks, "link", "del", "d1")  # takes p1 along
        # IPv6 keeps the route with the nexthop that is left.
        assert ("2001:db8:99::/64", 50) in [
            r[:2] for r in kernel_routes(two_uplinks, socket.AF_INET6, 300)
        ]
        if via == "undo":
            journal.undo()
    finally:
        journal.close()
    if via == "repair":
        with Journal(OWNER, netns=two_uplinks, state_dir=tmp_path) as repairer:
            assert repairer.repair() == 1
    assert [r[:2] for r in kernel_routes(two_uplinks, socket.AF_INET6, 300)] == [
        ("2001:db8:99::/64", 60)
    ]
    assert [r[:2] for r in kernel_routes(two_uplinks, socket.AF_INET6, 301)] == [
        ("2001:db8:99::/64", 50)
    ]
    assert not (tmp_path / "client.json").exists()


@needs_root
def test_a_vanished_device_never_widens_the_delete_to_other_metrics(
    two_uplinks: str, tmp_path: Path
) -> None:
    # IPv4 metric 0 is a wildcard in a kernel delete; the route at metric 100 is not ours.
    ip("-n", two_uplinks, "route", "add", "198.18.0.0/24", "via", "10.2.0.1", "metric", "100")
    with Journal(OWNER, netns=two_uplinks, state_dir=tmp_path) as journal:
        journal.add_route(
            Route("198.18.0.0/24", nexthops=(Nexthop("10.1.0.1", "d1"), Nexthop("10.2.0.1", "d2")))
        )
        ip("-n", two_uplinks, "link", "del", "d1")  # IPv4 drops the whole multipath route
    assert ("198.18.0.0/24", 100) in [
        r[:2] for r in kernel_routes(two_uplinks, socket.AF_INET, 254)
    ]


@needs_root
def test_a_single_device_route_whose_device_vanished_is_undone_quietly(
    two_uplinks: str, tmp_path: Path
) -> None:
    with Journal(OWNER, netns=two_uplinks, state_dir=tmp_path) as journal:
        journal.add_route(Route("198.18.0.0/24", gateway="10.1.0.1", ifname="d1", table=300))
        journal.add_route(Route("2001:db8:99::/64", ifname="d1", metric=7))
        ip("-n", two_uplinks, "link", "del", "d1")  # the kernel removes both routes
    assert journal.pending == []
    assert kernel_routes(two_uplinks, socket.AF_INET6, 300) == []


@needs_root
def test_a_replaced_route_whose_device_vanished_gives_way(two_uplinks: str, tmp_path: Path) -> None:
    # The host's route named d1; ours replaced it. d1 vanished: the host's route cannot come
    # back, and ours must not outlive the run.
    ip("-n", two_uplinks, "route", "add", "default", "via", "10.1.0.1", "metric", "100")
    with Journal(OWNER, netns=two_uplinks, state_dir=tmp_path) as journal:
        journal.replace_route(Route("0.0.0.0/0", gateway="10.2.0.1", ifname="d2", metric=100))
        ip("-n", two_uplinks, "link", "del", "d1")
    assert kernel_routes(two_uplinks, socket.AF_INET, 254) == [("10.2.0.0/24", 0, [ANY])]


@needs_root
def test_a_rule_naming_a_vanished_device_is_undone(two_uplinks: str, tmp_path: Path) -> None:
    with Journal(OWNER, netns=two_uplinks, state_dir=tmp_path) as journal:
        journal.add_rule(Rule(priority=500, table=300, iifname="d1"))
        journal.add_rule(Rule(priority=501, table=300, oifname="d1"))
        ip("-n", two_uplinks, "link", "del", "d1")
        assert "iif d1 [detached]" in ip("-n", two_uplinks, "rule")  # the kernel keeps it
    assert "d1" not in ip("-n", two_uplinks, "rule")
