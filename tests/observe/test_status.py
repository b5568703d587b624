"""The status command: table and JSON from a stats file; one line and exit 1 when nothing runs."""

import json
from pathlib import Path

import pytest

from fluxify.cli import client_main, server_main
from fluxify.observe.statsfile import read_client_snapshot, read_snapshot
from fluxify.observe.status import measured_rates, status_table, with_measured_rates
from tests.observe.samples import client_stats, server_stats, write_stats


def test_rates_come_from_two_consecutive_snapshots(tmp_path: Path) -> None:
    stats = tmp_path / "client-stats.json"
    write_stats(stats, client_stats(), age_s=1.0)

    def runner_writes_again(_: float) -> None:
        body = client_stats()
        body["paths"][0]["tx_bytes"] += 1_250_000  # 10 Mbit in one second
        body["paths"][1]["rx_bytes"] += 250_000
        write_stats(stats, body)

    snapshot, rates = with_measured_rates(
        lambda: read_client_snapshot(tmp_path), sleep=runner_writes_again
    )
    assert rates[("1a2b3c4d", "wan1")][0] == pytest.approx(10.0, rel=0.05)
    assert rates[("1a2b3c4d", "wan2")] == (0.0, pytest.approx(2.0, rel=0.05))
    table = status_table(snapshot, rates)
    assert "tx Mbit/s" in table and "share %" in table
    wan1 = next(line for line in table.splitlines() if line.strip().startswith("wan1"))
    assert " 10.0 " in wan1 and " 83 " in wan1  # 10 of 12 Mbit/s carried


def test_counters_that_went_back_give_no_rate(tmp_path: Path) -> None:
    before = read_snapshot(write_stats(tmp_path / "a.json", client_stats(), age_s=1), "bonding")
    body = client_stats()
    body["paths"][0]["tx_bytes"] = 0  # a new session restarted the counters
    after = read_snapshot(write_stats(tmp_path / "b.json", body), "bonding")
    assert set(measured_rates(before, after)) == {("1a2b3c4d", "wan2")}


def test_the_engine_rates_need_no_second_snapshot(tmp_path: Path) -> None:
    write_stats(tmp_path / "server-stats.json", server_stats(engine=True))

    def no_waiting(_: float) -> None:
        raise AssertionError("the snapshot has its own rates")

    snapshot, rates = with_measured_rates(
        lambda: read_snapshot(tmp_path / "server-stats.json", "server"), sleep=no_waiting
    )
    table = status_table(snapshot, rates)
    headings = ("priority", "owd ms", "queue ms", "jitter ms", "loss %", "rate Mbit/s", "share %")
    for heading in (*headings, "delivery Mbit/s"):
        assert heading in table, heading
    assert "session deadbeef  alice  10.8.0.2" in table
    assert "server: 1 session, TUN packets read 1000 / written 2000" in table
    assert "drops: unknown_session 9" in table
    assert "reorder: held 1, reordered 2, released_late 3, lost 4, hold_ms 5" in table


def test_columns_without_values_are_left_out(tmp_path: Path) -> None:
    snapshot = read_snapshot(write_stats(tmp_path / "c.json", client_stats()), "bonding")
    table = status_table(snapshot, {})
    assert "owd ms" not in table and "priority" not in table
    assert "rtt ms" in table and "140.0 kB" in table


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLUXIFY_STATE_DIR", str(tmp_path))
    return tmp_path


def test_status_with_nothing_running(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert server_main(["status"]) == 1
    assert client_main(["status", "-json"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"fluxify-server: not running (no {state_dir / 'server-stats.json'})"
    assert err[1].startswith("fluxify-client: not running (no fresh client-stats.json")
    write_stats(state_dir / "server-stats.json", server_stats(), age_s=20)
    assert server_main(["status"]) == 1
    assert "last updated 20 s ago" in capsys.readouterr().err


def test_status_json_for_scripts(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stats(state_dir / "server-stats.json", server_stats(engine=True))
    assert server_main(["status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "server" and out["stats"]["sessions"][0]["identity"] == "alice"
    assert out["file"] == str(state_dir / "server-stats.json") and out["age_s"] < 5


def test_status_with_a_bad_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        client_main(["status", "-jsn"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-jsn" in err, err


def test_a_load_balance_client_gets_its_uplinks_as_rows(tmp_path: Path) -> None:
    body = {
        "mode": "load-balance",
        "active": 2,
        "uplinks": [
            {
                "ifname": name,
                "state": state,
                "weight": 1,
                "probes": {"IPv4": {"srtt_ms": 20.0, "loss_pct": 0.0}},
                "tx_bytes": 1000,
                "rx_bytes": 2000,
                "tx_rate_bps": 2e6,
                "rx_rate_bps": 1e6,
                "share_pct": 50.0,
            }
            for name, state in (("eth0", "up"), ("wwan0", "down"))
        ],
    }
    write_stats(tmp_path / "loadbalance-stats.json", body)
    snapshot, rates = with_measured_rates(lambda: read_client_snapshot(tmp_path))
    table = status_table(snapshot, rates)
    assert table.startswith("client, load-balance: 2 uplink(s) in the route")
    rows = {
        line.split()[0]: line.split()
        for line in table.splitlines()
        if "  eth0" in line or "  wwan0" in line
    }
    assert rows["eth0"][1:3] == ["alive", "20.0"] and rows["wwan0"][1] == "dead"
    assert "3.0" in rows["eth0"] and "50" in rows["eth0"]  # rate Mbit/s and share %
