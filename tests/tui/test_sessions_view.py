"""The server TUI's live sessions pane, fed by a ``server-stats.json`` in a temporary state dir."""

import json
import os
import time
from pathlib import Path
from typing import Any

from textual.widgets import Static

from fluxify.pki.authority import ensure_server_pki
from fluxify.server.config import ServerConfig
from fluxify.tui.server_app import CertManagerApp
from fluxify.tui.sessions_view import (
    NO_SERVER,
    STATS_FILE,
    SessionsView,
    StatsSample,
    ThroughputMeter,
    format_rate,
    read_stats,
)

SIZE = (120, 40)


def stats(tx_bytes: int, rx_bytes: int) -> dict[str, Any]:
    return {
        "sessions": [
            {
                "session_id": 0x1234ABCD,
                "identity": "alice",
                "inner_v4": "10.8.0.2",
                "idle_s": 0.2,
                "paths": [
                    {
                        "label": "[2001:db8::1]:40000",
                        "alive": True,
                        "rtt_ms": 12.5,
                        "weight": 0.75,
                        "idle_s": 0.1,
                        "tx_packets": 10,
                        "tx_bytes": tx_bytes,
                        "rx_packets": 5,
                        "rx_bytes": rx_bytes,
                    },
                    {
                        "label": "192.0.2.7:5000",
                        "alive": False,
                        "rtt_ms": None,
                        "weight": 0.25,
                        "idle_s": 3.0,
                        "tx_packets": 0,
                        "tx_bytes": 0,
                        "rx_packets": 0,
                        "rx_bytes": 0,
                    },
                ],
            }
        ],
        "drops": {},
    }


def write_stats(state: Path, document: dict[str, Any], written_at: float) -> None:
    state.mkdir(parents=True, exist_ok=True)
    path = state / STATS_FILE
    path.write_text(json.dumps(document))
    os.utime(path, (written_at, written_at))


def pane_text(app: CertManagerApp) -> str:
    return app.query_one("#sessions", SessionsView).shown


async def test_the_pane_shows_sessions_paths_rtt_and_throughput(tmp_path: Path) -> None:
    root, state = tmp_path / "pki", tmp_path / "state"
    ensure_server_pki(root, None)
    now = time.time()
    write_stats(state, stats(1_000_000, 10_000), now - 1.0)
    app = CertManagerApp(ServerConfig(pki_dir=root), state_dir=state)
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one("#sessions", SessionsView)
        text = pane_text(app)
        assert "alice  10.8.0.2  session 1234abcd" in text
        assert "[2001:db8::1]:40000" in text and "rtt 12.5 ms" in text and "w 0.75" in text
        assert "192.0.2.7:5000" in text and "down" in text
        write_stats(state, stats(2_000_000, 20_000), now)  # one second later
        view.refresh_stats()
        await pilot.pause()
        text = pane_text(app)
        assert "out 8.0 Mbit/s" in text and "in 80.0 kbit/s" in text
        assert "[2001:db8::1]:40000" in str(view.render())  # not eaten as markup


async def test_no_file_or_a_stale_one_means_no_server(tmp_path: Path) -> None:
    root, state = tmp_path / "pki", tmp_path / "state"
    ensure_server_pki(root, None)
    app = CertManagerApp(ServerConfig(pki_dir=root), state_dir=state)
    async with app.run_test(size=SIZE) as pilot:
        assert pane_text(app) == NO_SERVER
        assert NO_SERVER in str(app.query_one("#sessions", Static).render())
        write_stats(state, stats(1, 1), time.time() - 6.0)
        app.query_one("#sessions", SessionsView).refresh_stats()
        await pilot.pause()
        assert pane_text(app) == NO_SERVER


def test_read_stats_freshness_and_garbage(tmp_path: Path) -> None:
    assert read_stats(tmp_path) is None
    write_stats(tmp_path, {"sessions": []}, 1000.0)
    assert read_stats(tmp_path, now=1004.0) == StatsSample(1000.0, [])
    assert read_stats(tmp_path, now=1005.0) is None
    (tmp_path / STATS_FILE).write_text("{half")
    assert read_stats(tmp_path) is None


def test_throughput_is_the_byte_delta_over_the_file_times() -> None:
    meter = ThroughputMeter()
    meter.update(StatsSample(100.0, stats(0, 0)["sessions"]))
    assert meter.rates == {}
    meter.update(StatsSample(102.0, stats(250_000, 500)["sessions"]))
    assert meter.rates[(0x1234ABCD, "[2001:db8::1]:40000")] == (1_000_000.0, 2_000.0)
    meter.update(StatsSample(102.0, stats(999_999, 999)["sessions"]))  # same file: no change
    assert meter.rates[(0x1234ABCD, "[2001:db8::1]:40000")] == (1_000_000.0, 2_000.0)
    assert format_rate(None) == "-" and format_rate(1.5e9) == "1.5 Gbit/s"
    assert format_rate(999.0) == "999 bit/s"
