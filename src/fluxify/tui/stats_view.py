"""Per-path rows for the client TUI from the runners' stats files (read as JSON, so the TUI works
for both modes and for a runner in another process).

Bonding writes ``client-stats.json`` (counters per path: rates come from the difference between
two reads); load-balance writes ``loadbalance-stats.json`` (rates already computed).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxify.client.config import Mode

STATS_FILES = {Mode.BONDING: "client-stats.json", Mode.LOAD_BALANCE: "loadbalance-stats.json"}


@dataclass(frozen=True)
class PathRow:
    """One line of the stats table; None where the mode does not know the value."""

    label: str
    state: str
    rtt_ms: float | None
    loss_pct: float | None
    tx_bps: float | None
    rx_bps: float | None
    tx_bytes: int | None
    rx_bytes: int | None
    share_pct: float | None = None
    priority: str | None = None  # bonding: "primary" or "backup"


@dataclass(frozen=True)
class StatsView:
    rows: tuple[PathRow, ...]
    summary: str
    total_bps: float


@dataclass
class StatsReader:
    """Reads the stats file of one mode; remembers the previous bonding counters for rates."""

    state_dir: Path
    _previous: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    _rates: dict[str, tuple[float, float]] = field(default_factory=dict)

    def path(self, mode: Mode) -> Path:
        return self.state_dir / STATS_FILES[mode]

    def read(self, mode: Mode, *, newer_than: float = 0.0) -> StatsView | None:
        """The current view, or None when there is no (fresh enough) readable file."""
        path = self.path(mode)
        try:
            mtime = path.stat().st_mtime
            if mtime < newer_than:
                return None
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(body, dict):
            return None
        try:
            if mode is Mode.LOAD_BALANCE:
                return load_balance_view(body)
            return self._bonding_view(body, mtime)
        except (KeyError, TypeError, ValueError):
            return None  # a file from another version: show nothing rather than crash

    def _bonding_view(self, body: dict[str, Any], mtime: float) -> StatsView:
        rows = []
        for path in body["paths"]:
            label = str(path["label"])
            tx, rx = int(path["tx_bytes"]), int(path["rx_bytes"])
            before = self._previous.get(label)
            if before is None or mtime > before[0]:
                if before is not None:  # a new sample: rates over the time between the two
                    elapsed = mtime - before[0]
                    self._rates[label] = (
                        max(tx - before[1], 0) * 8 / elapsed,
                        max(rx - before[2], 0) * 8 / elapsed,
                    )
                self._previous[label] = (mtime, tx, rx)
            tx_bps, rx_bps = self._rates.get(label, (None, None))
            rows.append(
                PathRow(
                    label=label,
                    state="up" if path["alive"] else "DEAD",
                    rtt_ms=path.get("rtt_ms"),
                    loss_pct=None,
                    tx_bps=tx_bps,
                    rx_bps=rx_bps,
                    tx_bytes=tx,
                    rx_bytes=rx,
                    priority=_text_or_none(path.get("priority")),
                )
            )
        total = sum((r.tx_bps or 0) + (r.rx_bps or 0) for r in rows)
        drops = body.get("drops") or {}
        summary = (
            f"session {int(body['session_id']):08x} | {body['client_ip']}"
            f" | reconnects {body.get('reconnects', 0)}"
            f" | drops {sum(drops.values()) if drops else 0}"
        )
        return StatsView(tuple(rows), summary, total)


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None  # absent in an older runner's file


def load_balance_view(body: dict[str, Any]) -> StatsView:
    rows = []
    for uplink in body["uplinks"]:
        probes = list((uplink.get("probes") or {}).values())
        rtts = [p["srtt_ms"] for p in probes if p.get("srtt_ms") is not None]
        losses = [p["loss_pct"] for p in probes if p.get("loss_pct") is not None]
        rows.append(
            PathRow(
                label=str(uplink["ifname"]),
                state=str(uplink["state"]),
                rtt_ms=min(rtts) if rtts else None,
                loss_pct=max(losses) if losses else None,
                tx_bps=float(uplink["tx_rate_bps"]),
                rx_bps=float(uplink["rx_rate_bps"]),
                tx_bytes=uplink.get("tx_bytes"),
                rx_bytes=uplink.get("rx_bytes"),
                share_pct=uplink.get("share_pct"),
            )
        )
    routes = body.get("routes") or {}
    summary = f"active {body.get('active', 0)}/{len(rows)}" + "".join(
        f" | {family} via {', '.join(hops)}" for family, hops in routes.items()
    )
    total = float(body.get("tx_rate_bps", 0)) + float(body.get("rx_rate_bps", 0))
    return StatsView(tuple(rows), summary, total)


def rate_text(bps: float | None) -> str:
    if bps is None:
        return "-"
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.1f} {unit}"
    return f"{bps:.0f} bit/s"


def bytes_text(count: int | None) -> str:
    if count is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def number_text(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.1f} {unit}"
