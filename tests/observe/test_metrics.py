"""/metrics from stats snapshots: every field exported with its unit, odd ones never fatal."""

import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fluxify.errors import ConfigError
from fluxify.observe.metrics import registry_for, serve_metrics
from fluxify.observe.statsfile import Snapshot, read_snapshot
from tests.observe.samples import client_stats, server_stats, write_stats

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(text: str) -> Series:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(snapshot: Snapshot | None, role: str = "client") -> Series:
    return scrape_text(generate_latest(registry_for(lambda: snapshot, role)).decode())


def value(series: Series, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


def names(series: Series) -> set[str]:
    return {name for name, _ in series}


def test_client_paths_today(tmp_path: Path) -> None:
    snapshot = read_snapshot(write_stats(tmp_path / "c.json", client_stats()), "bonding")
    series = scrape(snapshot)
    wan1 = {"session": "1a2b3c4d", "identity": "", "path": "wan1"}
    assert value(series, "fluxify_path_tx_bytes_total", **wan1) == 140_000
    assert value(series, "fluxify_path_rx_packets_total", **wan1) == 50
    assert value(series, "fluxify_path_rtt_seconds", **wan1) == pytest.approx(0.0215)
    assert value(series, "fluxify_path_up", **wan1) == 1
    assert value(series, "fluxify_path_weight", **wan1) == 0.6
    assert value(series, "fluxify_drops_total", reason="bad_tag") == 2
    assert value(series, "fluxify_reconnects_total") == 1
    session = {"session": "1a2b3c4d", "identity": ""}
    assert value(series, "fluxify_reorder_hold_seconds", **session) == pytest.approx(0.012)
    assert value(series, "fluxify_reorder_skipped_gaps_total", **session) == 4
    assert value(series, "fluxify_up", role="client") == 1
    assert "fluxify_efficiency_ratio" not in names(series)  # absent field: no made-up series
    assert "process_resident_memory_bytes" in names(series)


def test_bond_engine_fields_are_exported_when_present(tmp_path: Path) -> None:
    snapshot = read_snapshot(write_stats(tmp_path / "s.json", server_stats(engine=True)), "server")
    series = scrape(snapshot, "server")
    path = {"session": "deadbeef", "identity": "alice", "path": "198.18.0.10:40000"}
    session = {"session": "deadbeef", "identity": "alice"}
    assert value(series, "fluxify_path_owd_seconds", **path) == pytest.approx(0.0102)
    assert value(series, "fluxify_path_jitter_seconds", **path) == pytest.approx(0.0015)
    assert value(series, "fluxify_path_rate_bits_per_second", **path) == 42e6
    assert value(series, "fluxify_path_loss_ratio", **path) == 0.01
    assert value(series, "fluxify_path_share_ratio", **path) == 0.7
    assert value(series, "fluxify_path_reinjected_total", **path) == 3
    assert value(series, "fluxify_path_duplicated_total", **path) == 4
    assert value(series, "fluxify_path_queue_seconds", **path) == pytest.approx(0.0025)
    assert value(series, "fluxify_path_delivery_bits_per_second", **path) == 40e6
    assert value(series, "fluxify_path_info", **path, priority="primary") == 1
    assert value(series, "fluxify_path_backup", **path) == 0
    for counter, expected in (("held", 1), ("reordered", 2), ("released_late", 3), ("lost", 4)):
        assert value(series, f"fluxify_reorder_{counter}_total", **session) == expected
    assert value(series, "fluxify_efficiency_ratio", session="", identity="") == 0.9
    assert value(series, "fluxify_sessions") == 1
    assert value(series, "fluxify_tun_packets_written_total") == 2000


def test_client_efficiency_and_backup_paths(tmp_path: Path) -> None:
    snapshot = read_snapshot(write_stats(tmp_path / "c.json", client_stats(engine=True)), "bonding")
    series = scrape(snapshot)
    session = {"session": "1a2b3c4d", "identity": ""}
    assert value(series, "fluxify_efficiency_ratio", **session) == 0.93
    assert value(series, "fluxify_path_backup", **session, path="wan2") == 1


def test_odd_and_unknown_fields(tmp_path: Path) -> None:
    body = server_stats()
    paths = body["sessions"][0]["paths"]
    paths[0].update(rtt_ms=None, weight="heavy", tx_bytes=-5, alive="yes", cwnd_bytes=64000)
    paths.append(dict(paths[1]))  # the same label twice: the first one wins
    paths[2]["tx_bytes"] = 1
    body["sessions"].append({"paths": [{"label": 7, "rx_bytes": 1.5, "nested": {"a": 1}}]})
    body["drops"] = {"short": "many", "bad_tag": 3}
    snapshot = read_snapshot(write_stats(tmp_path / "s.json", body), "server")
    series = scrape(snapshot, "server")
    first = {"session": "deadbeef", "identity": "alice", "path": "198.18.0.10:40000"}
    second = {**first, "path": "198.18.0.11:40001"}
    assert ("fluxify_path_rtt_seconds", frozenset(first.items())) not in series
    assert ("fluxify_path_tx_bytes_total", frozenset(first.items())) not in series
    assert ("fluxify_path_up", frozenset(first.items())) not in series
    assert value(series, "fluxify_path_cwnd_bytes", **first) == 64000
    assert value(series, "fluxify_path_tx_bytes_total", **second) == 140_000
    assert value(series, "fluxify_path_rx_bytes_total", session="", identity="", path="7") == 1.5
    assert value(series, "fluxify_drops_total", reason="bad_tag") == 3
    assert value(series, "fluxify_sessions") == 2


def test_nothing_running_is_fluxify_up_0() -> None:
    series = scrape(None, "server")
    assert value(series, "fluxify_up", role="server") == 0
    assert not any(name.startswith("fluxify_path") for name in names(series))

    def broken() -> Snapshot:
        raise RuntimeError("disk on fire")

    text = generate_latest(registry_for(broken, "client")).decode()
    assert value(scrape_text(text), "fluxify_up", role="client") == 0


def test_served_on_the_given_address_only(tmp_path: Path) -> None:
    snapshot = read_snapshot(write_stats(tmp_path / "c.json", client_stats()), "bonding")
    server = serve_metrics("127.0.0.1", 0, registry_for(lambda: snapshot, "client"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            series = scrape_text(r.read().decode())
        assert value(series, "fluxify_path_up", session="1a2b3c4d", identity="", path="wan2") == 1
        with pytest.raises(
            ConfigError, match=rf"-metrics: cannot listen on 127.0.0.1:{server.port}"
        ):
            serve_metrics("127.0.0.1", server.port, registry_for(lambda: None, "client"))
    finally:
        server.stop()
