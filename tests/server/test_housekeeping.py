"""The server's once-a-second housekeeping: its errors are logged, never the end of the server."""

import asyncio
import errno
import logging
import os
import stat
from pathlib import Path
from typing import Any, cast

import pytest

from fluxify.server import app
from fluxify.server.app import BondingServer
from fluxify.server.config import ServerConfig
from fluxify.server.dataplane import ServerDataPlane


class FakeTunWriter:
    written = 0


class FakeDropCounters:
    def snapshot(self) -> dict[str, int]:
        return {}


class FakeDataPlane:
    """What ``_housekeeping`` and ``_write_stats`` touch, nothing more."""

    def __init__(self) -> None:
        self.tun = FakeTunWriter()
        self.drops = FakeDropCounters()
        self.tun_packets_read = 0
        self.sweeps = 0

    def send_probes(self, *, idle_too: bool) -> None:
        pass

    def sweep(self) -> None:
        self.sweeps += 1

    def snapshot(self) -> list[Any]:
        return []


async def test_emfile_in_housekeeping_does_not_end_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """~1 100 idle connections once made the stats write raise EMFILE out of ``run()``."""
    monkeypatch.setattr(app, "HOUSEKEEPING_INTERVAL_S", 0.001)
    server = BondingServer(ServerConfig(pki_dir=tmp_path / "pki"), tmp_path / "state")
    failures = 0

    def write_stats(dataplane: object) -> None:
        nonlocal failures
        failures += 1
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(server, "_write_stats", write_stats)
    dataplane = FakeDataPlane()
    stop = asyncio.Event()
    housekeeping = asyncio.create_task(server._housekeeping(cast(ServerDataPlane, dataplane), stop))
    async with asyncio.timeout(30):
        while failures < 5:
            assert not housekeeping.done(), "housekeeping ended on EMFILE"
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(housekeeping, 30)
    assert dataplane.sweeps >= 5
    warnings = [r for r in caplog.records if "housekeeping failed" in r.getMessage()]
    assert len(warnings) == 1  # one warning per interval, not one per failure


def test_server_stats_are_private_and_written_through_no_planted_name(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (state / "server-stats.tmp").symlink_to(victim)  # the old fixed temporary name
    server = BondingServer(ServerConfig(pki_dir=tmp_path / "pki"), state)
    server._write_stats(cast(ServerDataPlane, FakeDataPlane()))
    stats = state / "server-stats.json"
    assert stat.S_IMODE(stats.stat().st_mode) == 0o600
    assert victim.read_text() == "untouched"
    assert sorted(p.name for p in state.iterdir()) == ["server-stats.json", "server-stats.tmp"]


async def test_housekeeping_errors_log_at_most_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(app, "HOUSEKEEPING_INTERVAL_S", 0.001)
    monkeypatch.setattr(app, "HOUSEKEEPING_ERROR_LOG_INTERVAL_S", 0.0)
    server = BondingServer(ServerConfig(pki_dir=tmp_path / "pki"), tmp_path / "state")
    calls = 0

    def end_revoked() -> list[Any]:
        nonlocal calls
        calls += 1
        raise ValueError("unreadable revocation list")

    monkeypatch.setattr(server, "end_revoked_sessions", end_revoked)
    stop = asyncio.Event()
    task = asyncio.create_task(server._housekeeping(cast(ServerDataPlane, FakeDataPlane()), stop))
    async with asyncio.timeout(30):
        while calls < 3:
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 30)
    # with a zero interval each failure is logged: the limiter is the interval, nothing else
    assert sum("housekeeping failed" in r.getMessage() for r in caplog.records) >= 3
