"""Metrics and status of a running lab: a real server and bonding client in namespaces.

The ``fom`` prefix keeps these namespaces apart from every other test's; leaving
``deployment`` removes them and the processes, also when an assertion fails.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fluxify.lab.deployment import BIN, Deployment, deployment, wait_until
from tests.observe.dashboard import load_dashboard, metric_names

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, TUN, nftables"),
]

SERVER_METRICS = "127.0.0.1:9108"
CLIENT_METRICS = "127.0.0.1:9109"
MB = 1_000_000
FETCH = (
    "import sys, urllib.request\n"
    "print(urllib.request.urlopen(f'http://{sys.argv[1]}/metrics', timeout=10).read().decode())"
)

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(dep: Deployment, netns: str, address: str) -> Series:
    """``/metrics`` as seen from inside ``netns`` (the endpoint binds that namespace's lo)."""
    text = dep.bed.run(netns, [sys.executable, "-c", FETCH, address]).stdout
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def per_path(series: Series, name: str) -> dict[str, float]:
    return {dict(labels)["path"]: v for (n, labels), v in series.items() if n == name}


def status(program: str, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLUXIFY_STATE_DIR": str(state)}
    return subprocess.run(
        [BIN / program, "status", *args], env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("observe"), prefix="fom") as dep:
        dep.issue("alice")
        dep.start_server(extra_args=("-metrics", SERVER_METRICS))
        dep.start_client("alice", extra_args=("-metrics", CLIENT_METRICS))
        wait_until("ping through the tunnel", dep.ping_internet, timeout_s=60)
        yield dep


def test_per_path_series_move_with_traffic(lab: Deployment) -> None:
    t = lab.t
    client_before = per_path(
        scrape(lab, t.client_ns, CLIENT_METRICS), "fluxify_path_tx_bytes_total"
    )
    server_before = per_path(
        scrape(lab, t.server_ns, SERVER_METRICS), "fluxify_path_rx_bytes_total"
    )
    assert set(client_before) == {"wan1", "wan2"}
    sent, received = lab.transfer(10 * MB)
    assert received["bytes"] == sent["bytes"] == 10 * MB

    def moved(ns: str, address: str, name: str, before: dict[str, float]) -> bool:
        after = per_path(scrape(lab, ns, address), name)
        grown = sum(after.values()) - sum(before.values())
        return grown > 10 * MB and sum(after[p] > before.get(p, 0) for p in after) >= 2

    wait_until(
        "client tx bytes per path to count the upload",
        lambda: moved(t.client_ns, CLIENT_METRICS, "fluxify_path_tx_bytes_total", client_before),
        timeout_s=30,
    )
    wait_until(
        "server rx bytes per path to count the upload",
        lambda: moved(t.server_ns, SERVER_METRICS, "fluxify_path_rx_bytes_total", server_before),
        timeout_s=30,
    )
    client = scrape(lab, t.client_ns, CLIENT_METRICS)
    assert per_path(client, "fluxify_path_up") == {"wan1": 1.0, "wan2": 1.0}
    assert all(v > 0 for v in per_path(client, "fluxify_path_rtt_seconds").values())
    server = scrape(lab, t.server_ns, SERVER_METRICS)
    assert server[("fluxify_sessions", frozenset())] == 1
    assert server[("fluxify_up", frozenset({("role", "server")}))] == 1


def test_the_dashboard_finds_its_series_in_the_lab(lab: Deployment) -> None:
    """Every dashboard metric today's data planes produce is in the live scrapes."""
    t = lab.t
    live = {name for name, _ in scrape(lab, t.client_ns, CLIENT_METRICS)}
    live |= {name for name, _ in scrape(lab, t.server_ns, SERVER_METRICS)}
    today = {  # what the bond engine's stats hold on an idle-then-loaded lab
        "fluxify_up",
        "fluxify_sessions",
        "fluxify_path_up",
        "fluxify_path_tx_bytes_total",
        "fluxify_path_rx_bytes_total",
        "fluxify_path_tx_packets_total",
        "fluxify_path_rx_packets_total",
        "fluxify_path_rtt_seconds",
        "fluxify_path_jitter_seconds",
        "fluxify_path_rate_bits_per_second",
        "fluxify_path_delivery_bits_per_second",
        "fluxify_path_loss_ratio",
        "fluxify_path_share_ratio",
        "fluxify_path_idle_seconds",
        "fluxify_path_reinjected_total",
        "fluxify_path_duplicated_total",
        "fluxify_path_info",
        "fluxify_path_backup",
        "fluxify_reorder_hold_seconds",
        "fluxify_reorder_held_total",
        "fluxify_reorder_lost_total",
        "fluxify_reconnects_total",
        "fluxify_tun_packets_read_total",
        "fluxify_stats_age_seconds",
        "process_resident_memory_bytes",
    }
    wanted = metric_names(load_dashboard())
    assert today <= wanted, sorted(today - wanted)
    assert today <= live, sorted(today - live)


def test_status_of_both_programs(lab: Deployment) -> None:
    server = status("fluxify-server", lab.workdir / "server-state")
    assert server.returncode == 0, server.stderr
    assert "server: 1 session" in server.stdout and "alice" in server.stdout
    client = status("fluxify-client", lab.client_state("alice"))
    assert client.returncode == 0, client.stderr
    rows = {
        line.split()[0]: line for line in client.stdout.splitlines() if line.startswith("  wan")
    }
    assert set(rows) == {"wan1", "wan2"} and all(" alive " in row for row in rows.values())
    assert "rate Mbit/s" in client.stdout and "share %" in client.stdout

    as_json = json.loads(status("fluxify-client", lab.client_state("alice"), "-json").stdout)
    assert as_json["mode"] == "bonding" and as_json["age_s"] < 5
    assert {p["label"] for p in as_json["stats"]["paths"]} == {"wan1", "wan2"}
    as_json = json.loads(status("fluxify-server", lab.workdir / "server-state", "--json").stdout)
    assert [s["identity"] for s in as_json["stats"]["sessions"]] == ["alice"]


def test_status_after_the_client_stopped(lab: Deployment) -> None:
    """Last in this module: stops the client, then status says it is not running (exit 1)."""
    lab.stop_client("alice")
    state = lab.client_state("alice")
    (state / "client-stats.json").unlink(missing_ok=True)  # a crash would leave it, stale
    result = status("fluxify-client", state)
    assert result.returncode == 1
    assert result.stderr.startswith("fluxify-client: not running"), result.stderr
    assert result.stderr.count("\n") == 1
