"""The live sessions pane of the server TUI: who is connected, over which paths, how fast.

The running server writes ``<state_dir>/server-stats.json`` every second (``server.app``); that
file is the local status endpoint. It counts as a running server while it is younger than
:data:`FRESH_S`. Throughput is the byte counters' change between two versions of the file,
divided by the time between their modification times.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.widgets import Static

from fluxify.linux.statefiles import state_dir_from_env

STATS_FILE = "server-stats.json"
FRESH_S = 5.0
REFRESH_S = 1.0
NO_SERVER = "no server running on this host"


def default_state_dir() -> Path:
    return state_dir_from_env()


@dataclass(frozen=True)
class StatsSample:
    """One version of the stats file: its sessions and when it was written (epoch seconds)."""

    written_at: float
    sessions: list[dict[str, Any]]


def read_stats(state_dir: Path, now: float | None = None) -> StatsSample | None:
    """The server's stats if the file exists, parses and is fresh; else None."""
    path = state_dir / STATS_FILE
    try:
        written_at = path.stat().st_mtime
        document = json.loads(path.read_text())
        sessions = document["sessions"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = time.time() if now is None else now
    if now - written_at >= FRESH_S or not isinstance(sessions, list):
        return None
    return StatsSample(written_at, [s for s in sessions if isinstance(s, dict)])


PathKey = tuple[int, str]
Rates = tuple[float, float]  # bits per second: server out (to the client), server in


class ThroughputMeter:
    """Byte deltas between two samples, per (session id, path label)."""

    def __init__(self) -> None:
        self._last_at: float | None = None
        self._last_bytes: dict[PathKey, tuple[int, int]] = {}
        self.rates: dict[PathKey, Rates] = {}

    def update(self, sample: StatsSample) -> None:
        if sample.written_at == self._last_at:
            return  # the same version of the file: keep the rates
        current = {
            (int(s.get("session_id", 0)), str(p.get("label", ""))): (
                int(p.get("tx_bytes", 0)),
                int(p.get("rx_bytes", 0)),
            )
            for s in sample.sessions
            for p in s.get("paths", ())
            if isinstance(p, dict)
        }
        rates: dict[PathKey, Rates] = {}
        if self._last_at is not None and sample.written_at > self._last_at:
            span = sample.written_at - self._last_at
            for key, (tx, rx) in current.items():
                before = self._last_bytes.get(key)
                if before is not None and tx >= before[0] and rx >= before[1]:
                    rates[key] = ((tx - before[0]) * 8 / span, (rx - before[1]) * 8 / span)
        self._last_at = sample.written_at
        self._last_bytes = current
        self.rates = rates


def format_rate(bits_per_s: float | None) -> str:
    if bits_per_s is None:
        return "-"
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits_per_s >= scale:
            return f"{bits_per_s / scale:.1f} {unit}"
    return f"{bits_per_s:.0f} bit/s"


def render_sessions(sample: StatsSample | None, rates: dict[PathKey, Rates]) -> str:
    """The pane's text: one line per session, one indented line per path."""
    if sample is None:
        return NO_SERVER
    if not sample.sessions:
        return "server running; no live sessions"
    lines = []
    for s in sorted(sample.sessions, key=lambda s: str(s.get("identity", ""))):
        session_id = int(s.get("session_id", 0))
        paths = [p for p in s.get("paths", ()) if isinstance(p, dict)]
        lines.append(
            f"{s.get('identity', '?')}  {s.get('inner_v4', '?')}  session {session_id:08x}  "
            f"idle {s.get('idle_s', '?')} s  {len(paths)} path(s)"
        )
        for p in paths:
            label = str(p.get("label", "?"))
            rtt = p.get("rtt_ms")
            out_bps, in_bps = rates.get((session_id, label), (None, None))
            lines.append(
                f"  {label:<28} {'up' if p.get('alive') else 'down':<4} "
                f"rtt {'-' if rtt is None else f'{rtt:.1f} ms':<9} "
                f"w {float(p.get('weight', 0.0)):.2f}  "
                f"out {format_rate(out_bps):<12} in {format_rate(in_bps)}"
            )
    return "\n".join(lines)


class SessionsView(Static):
    """Re-reads the stats file every :data:`REFRESH_S` seconds and shows the live sessions."""

    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        id: str | None = None,
    ) -> None:
        super().__init__(NO_SERVER, id=id)
        self.state_dir = state_dir
        self._clock = clock
        self.meter = ThroughputMeter()
        self.shown = NO_SERVER

    def on_mount(self) -> None:
        self.refresh_stats()
        self.set_interval(REFRESH_S, self.refresh_stats)

    def refresh_stats(self) -> None:
        sample = read_stats(self.state_dir, self._clock())
        if sample is not None:
            self.meter.update(sample)
        self.shown = render_sessions(sample, self.meter.rates)
        self.update(Text(self.shown))
