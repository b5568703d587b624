"""Reading stats files: fresh, stale, missing, odd; one view of sessions and paths per mode."""

from pathlib import Path

import pytest

from fluxify.observe.statsfile import (
    NotRunningError,
    number,
    read_client_snapshot,
    read_server_snapshot,
    read_snapshot,
    sessions_of,
)
from tests.observe.samples import client_stats, server_stats, write_stats


def test_a_fresh_file_is_read_with_its_age(tmp_path: Path) -> None:
    write_stats(tmp_path / "server-stats.json", server_stats(), age_s=1.0)
    snapshot = read_server_snapshot(tmp_path)
    assert snapshot.mode == "server" and 0.5 < snapshot.age_s < 3
    assert snapshot.body["tun_packets_read"] == 1000


def test_missing_and_stale_files_say_not_running(tmp_path: Path) -> None:
    with pytest.raises(NotRunningError, match=r"not running \(no .*server-stats.json\)"):
        read_server_snapshot(tmp_path)
    write_stats(tmp_path / "server-stats.json", server_stats(), age_s=60)
    with pytest.raises(NotRunningError, match="last updated 60 s ago"):
        read_server_snapshot(tmp_path)


def test_garbage_is_not_a_snapshot(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(NotRunningError, match="does not hold a stats object"):
        read_snapshot(tmp_path / "x.json", "server")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(NotRunningError, match="not valid JSON"):
        read_snapshot(tmp_path / "x.json", "server")


def test_the_client_reads_whichever_mode_runs(tmp_path: Path) -> None:
    with pytest.raises(NotRunningError, match=r"client-stats\.json or loadbalance-stats\.json"):
        read_client_snapshot(tmp_path)
    write_stats(tmp_path / "client-stats.json", client_stats(), age_s=30)  # an old bonding run
    write_stats(tmp_path / "loadbalance-stats.json", {"mode": "load-balance", "uplinks": []})
    assert read_client_snapshot(tmp_path).mode == "load-balance"


def test_sessions_of_every_mode(tmp_path: Path) -> None:
    client = read_snapshot(write_stats(tmp_path / "c.json", client_stats()), "bonding")
    [session] = sessions_of(client)
    assert session["session"] == "1a2b3c4d" and [p["label"] for p in session["paths"]] == [
        "wan1",
        "wan2",
    ]
    server = read_snapshot(write_stats(tmp_path / "s.json", server_stats()), "server")
    assert [(s["session"], s["identity"]) for s in sessions_of(server)] == [("deadbeef", "alice")]
    lb_body = {
        "uplinks": [
            {
                "ifname": "eth0",
                "state": "up",
                "weight": 1,
                "probes": {"IPv4": {"srtt_ms": 12.0, "loss_pct": 5.0}, "IPv6": {"srtt_ms": 9.0}},
                "tx_bytes": 10,
                "rx_bytes": 20,
                "tx_rate_bps": 1e6,
                "rx_rate_bps": 3e6,
                "share_pct": 40.0,
            },
            "junk",
        ]
    }
    lb = read_snapshot(write_stats(tmp_path / "l.json", lb_body), "load-balance")
    [[eth0]] = [s["paths"] for s in sessions_of(lb)]
    assert eth0["alive"] is True and eth0["rtt_ms"] == 9.0 and eth0["loss"] == 0.05
    assert eth0["share"] == 0.4 and eth0["rate_mbit"] == 4.0


def test_odd_fields_never_crash_the_view(tmp_path: Path) -> None:
    body = {"sessions": [{"session_id": "x", "paths": "nope"}, 3, {"paths": [1, {"label": 2}]}]}
    snapshot = read_snapshot(write_stats(tmp_path / "s.json", body), "server")
    assert [s["paths"] for s in sessions_of(snapshot)] == [[], [{"label": 2}]]
    assert [number(v) for v in (1, 2.5, True, "3", None, float("nan"))] == [
        1.0,
        2.5,
        None,
        None,
        None,
        None,
    ]


def test_a_stats_file_of_root_read_by_a_user_says_use_sudo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = write_stats(tmp_path / "server-stats.json", server_stats())

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # what a 0600 root file gives a user
    with pytest.raises(NotRunningError, match=r"permission denied .*use sudo"):
        read_server_snapshot(tmp_path)
    with pytest.raises(NotRunningError, match="permission denied"):
        write_stats(tmp_path / "client-stats.json", client_stats())
        read_client_snapshot(tmp_path)
    assert stats.exists()
