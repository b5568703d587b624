"""Read a runner's stats snapshot: which file, how old, and one normalised view of its paths.

The runners write ``<state_dir>/server-stats.json``, ``client-stats.json`` (bonding) or
``loadbalance-stats.json`` once a second, replaced whole. A file older than
``STALE_AFTER_S`` belongs to a runner that stopped or hangs. Readers must tolerate any field
being absent or odd: the data planes add fields over time (one-way delay, loss, shares, ...).
"""

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVER_STATS = "server-stats.json"
CLIENT_STATS = "client-stats.json"
LOADBALANCE_STATS = "loadbalance-stats.json"
STALE_AFTER_S = 5.0  # five missed one-second writes


class NotRunningError(Exception):
    """No fresh stats file: the sentence says which file and why (missing, stale, unreadable)."""


@dataclass(frozen=True)
class Snapshot:
    """One stats file as read: its ``mode`` ("server", "bonding", "load-balance"), body, age."""

    mode: str
    path: Path
    body: dict[str, Any]
    age_s: float
    mtime_ns: int


def read_snapshot(path: Path, mode: str, *, now: float | None = None) -> Snapshot:
    """The snapshot at ``path``; raises ``NotRunningError`` when missing, unreadable or stale."""
    for _ in range(5):  # a read can race the writer's rename: try again
        try:
            info = path.stat()
            body = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise NotRunningError(f"not running (no {path})") from None
        except PermissionError:
            raise NotRunningError(
                f"cannot read {path}: permission denied (the stats belong to root: use sudo)"
            ) from None
        except (OSError, ValueError):
            time.sleep(0.02)
            continue
        if not isinstance(body, dict):
            raise NotRunningError(f"{path} does not hold a stats object")
        age = max((time.time() if now is None else now) - info.st_mtime, 0.0)
        if age > STALE_AFTER_S:
            raise NotRunningError(
                f"not running ({path} was last updated {age:.0f} s ago; a live one is "
                "rewritten every second)"
            )
        return Snapshot(mode, path, body, age, info.st_mtime_ns)
    raise NotRunningError(f"{path} is not valid JSON")


def read_client_snapshot(state_dir: Path, *, now: float | None = None) -> Snapshot:
    """The fresher of the bonding and the load-balance stats (a client runs one mode)."""
    found: list[Snapshot] = []
    problems: list[str] = []
    for name, mode in ((CLIENT_STATS, "bonding"), (LOADBALANCE_STATS, "load-balance")):
        try:
            found.append(read_snapshot(state_dir / name, mode, now=now))
        except NotRunningError as exc:
            problems.append(str(exc))
    if found:
        return min(found, key=lambda s: s.age_s)
    permission = [p for p in problems if "permission denied" in p]
    if permission:
        raise NotRunningError(permission[0])
    raise NotRunningError(
        f"not running (no fresh {CLIENT_STATS} or {LOADBALANCE_STATS} in {state_dir})"
    )


def read_server_snapshot(state_dir: Path, *, now: float | None = None) -> Snapshot:
    return read_snapshot(state_dir / SERVER_STATS, "server", now=now)


# -- a normalised view: sessions of paths, whatever the mode ------------------------------------


def number(value: object) -> float | None:
    """``value`` as a finite float, or None (absent, text, bool, NaN: never a crash)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def sessions_of(snapshot: Snapshot) -> list[dict[str, Any]]:
    """``[{session, identity, idle_s, reorder, efficiency, paths: [path dict]}]`` for any mode.

    ``session`` is the id as 8 hex digits (as the logs and TUIs print it), "" when unknown. The
    load-balance uplinks become paths of one nameless session with the bonding field names.
    """
    body = snapshot.body
    if snapshot.mode == "load-balance":
        return [{"session": "", "identity": "", "paths": _loadbalance_paths(body)}]
    raw = body.get("sessions") if snapshot.mode == "server" else [body]
    sessions = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        session_id = item.get("session_id")
        paths = item.get("paths")
        sessions.append(
            {
                **item,
                "session": f"{session_id:08x}" if isinstance(session_id, int) else "",
                "identity": str(item.get("identity") or ""),
                "paths": [p for p in paths if isinstance(p, dict)]
                if isinstance(paths, list)
                else [],
            }
        )
    return sessions


def _loadbalance_paths(body: dict[str, Any]) -> list[dict[str, Any]]:
    paths = []
    uplinks = body.get("uplinks")
    for row in uplinks if isinstance(uplinks, list) else []:
        if not isinstance(row, dict):
            continue
        found = row.get("probes")
        probes = (
            [p for p in found.values() if isinstance(p, dict)] if isinstance(found, dict) else []
        )
        rtts = [number(p.get("srtt_ms")) for p in probes]
        losses = [number(p.get("loss_pct")) for p in probes]
        tx_rate, rx_rate = number(row.get("tx_rate_bps")), number(row.get("rx_rate_bps"))
        share = number(row.get("share_pct"))
        paths.append(
            {
                "label": str(row.get("ifname", "?")),
                "alive": row.get("state") == "up",
                "rtt_ms": min((r for r in rtts if r is not None), default=None),
                "loss": max((x / 100 for x in losses if x is not None), default=None),
                "weight": row.get("weight"),
                "share": None if share is None else share / 100,
                "rate_mbit": None
                if tx_rate is None or rx_rate is None
                else (tx_rate + rx_rate) / 1e6,
                "tx_bytes": row.get("tx_bytes"),
                "rx_bytes": row.get("rx_bytes"),
            }
        )
    return paths
