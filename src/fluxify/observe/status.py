"""``fluxify-server status`` / ``fluxify-client status``: the live state as a table or JSON.

What ``wg show`` is to WireGuard. Rates come from the data plane's own estimate when the
snapshot has one (``rate_mbit``), else from the byte counters of two consecutive snapshots.
"""

import json
import time
from collections.abc import Callable
from typing import Any

from fluxify.observe.statsfile import NotRunningError, Snapshot, number, sessions_of

NEXT_SNAPSHOT_TIMEOUT_S = 2.5  # the runners write once a second

PathKey = tuple[str, str]  # (session, path label)


def with_measured_rates(
    read: Callable[[], Snapshot], *, sleep: Callable[[float], None] = time.sleep
) -> tuple[Snapshot, dict[PathKey, tuple[float, float]]]:
    """The newest snapshot and per-path (tx, rx) Mbit/s between it and the one before.

    Waits for the runner's next write only when some path lacks its own rate estimate. If no
    new write comes within ``NEXT_SNAPSHOT_TIMEOUT_S``, rates are left out (empty dict).
    """
    first = read()
    paths = [p for s in sessions_of(first) for p in s["paths"]]
    if first.mode == "load-balance" or all(number(p.get("rate_mbit")) is not None for p in paths):
        return first, {}
    deadline = time.monotonic() + NEXT_SNAPSHOT_TIMEOUT_S
    while time.monotonic() < deadline:
        sleep(0.05)
        try:
            second = read()
        except NotRunningError:
            break
        if second.mtime_ns != first.mtime_ns:
            return second, measured_rates(first, second)
    return first, {}


def measured_rates(before: Snapshot, after: Snapshot) -> dict[PathKey, tuple[float, float]]:
    """(tx, rx) Mbit/s per path present in both snapshots; counters that went back are skipped."""
    elapsed = (after.mtime_ns - before.mtime_ns) / 1e9
    if elapsed <= 0:
        return {}
    old = _counters(before)
    rates = {}
    for key, (tx, rx) in _counters(after).items():
        if key in old and tx >= old[key][0] and rx >= old[key][1]:
            rates[key] = (
                (tx - old[key][0]) * 8 / elapsed / 1e6,
                (rx - old[key][1]) * 8 / elapsed / 1e6,
            )
    return rates


def _counters(snapshot: Snapshot) -> dict[PathKey, tuple[float, float]]:
    out = {}
    for session in sessions_of(snapshot):
        for path in session["paths"]:
            tx, rx = number(path.get("tx_bytes")), number(path.get("rx_bytes"))
            if tx is not None and rx is not None:
                out[(session["session"], str(path.get("label", "?")))] = (tx, rx)
    return out


# -- JSON ---------------------------------------------------------------------------------------


def status_json(snapshot: Snapshot, rates: dict[PathKey, tuple[float, float]]) -> str:
    """The snapshot as written, with where it came from, its age and the measured rates."""
    return json.dumps(
        {
            "mode": snapshot.mode,
            "file": str(snapshot.path),
            "age_s": round(snapshot.age_s, 2),
            "stats": snapshot.body,
            "measured_rates": [
                {"session": s, "path": p, "tx_mbit_s": round(tx, 3), "rx_mbit_s": round(rx, 3)}
                for (s, p), (tx, rx) in rates.items()
            ],
        },
        indent=2,
    )


# -- the table ----------------------------------------------------------------------------------

COLUMNS = (
    "path",
    "state",
    "priority",
    "rtt ms",
    "owd ms",
    "queue ms",
    "jitter ms",
    "loss %",
    "tx Mbit/s",
    "rx Mbit/s",
    "rate Mbit/s",
    "delivery Mbit/s",
    "share %",
    "weight",
    "sent",
    "received",
    "idle s",
)
ALWAYS_SHOWN = frozenset({"path", "state", "sent", "received"})


def status_table(snapshot: Snapshot, rates: dict[PathKey, tuple[float, float]]) -> str:
    body = snapshot.body
    sessions = sessions_of(snapshot)
    lines = [_headline(snapshot, sessions)]
    for session in sessions:
        lines.append("")
        lines.append(_session_line(snapshot, session))
        rows = [_path_row(session, path, rates) for path in session["paths"]]
        _fill_shares(rows)
        lines.extend("  " + line for line in _render(rows))
        reorder = session.get("reorder")
        if isinstance(reorder, dict) and reorder:
            lines.append("  reorder: " + _pairs(reorder))
    drops = body.get("drops")
    lines.append("")
    lines.append("drops: " + (_pairs(drops) if isinstance(drops, dict) and drops else "none"))
    return "\n".join(lines)


def _headline(snapshot: Snapshot, sessions: list[dict[str, Any]]) -> str:
    body = snapshot.body
    age = f"updated {snapshot.age_s:.1f} s ago ({snapshot.path})"
    if snapshot.mode == "server":
        count = len(sessions)
        tun = ""
        read, written = (
            number(body.get("tun_packets_read")),
            number(body.get("tun_packets_written")),
        )
        if read is not None and written is not None:
            tun = f", TUN packets read {read:.0f} / written {written:.0f}"
        return f"server: {count} session{'s' if count != 1 else ''}{tun}; {age}"
    if snapshot.mode == "load-balance":
        return f"client, load-balance: {body.get('active', '?')} uplink(s) in the route; {age}"
    efficiency = number(body.get("efficiency"))
    extra = "" if efficiency is None else f", efficiency {efficiency * 100:.0f} %"
    return f"client, bonding: reconnects {body.get('reconnects', 0)}{extra}; {age}"


def _session_line(snapshot: Snapshot, session: dict[str, Any]) -> str:
    if snapshot.mode == "load-balance":
        return "uplinks"
    parts = [f"session {session['session'] or '?'}"]
    if session["identity"]:
        parts.append(session["identity"])
    for key in ("inner_v4", "client_ip", "client_ip6"):
        if session.get(key):
            parts.append(str(session[key]))
    idle = number(session.get("idle_s"))
    if idle is not None:
        parts.append(f"idle {idle:.1f} s")
    efficiency = number(session.get("efficiency"))
    if efficiency is not None and snapshot.mode == "server":
        parts.append(f"efficiency {efficiency * 100:.0f} %")
    return "  ".join(parts)


def _path_row(
    session: dict[str, Any], path: dict[str, Any], rates: dict[PathKey, tuple[float, float]]
) -> dict[str, str]:
    label = str(path.get("label", "?"))
    alive = path.get("alive")
    measured = rates.get((session["session"], label))
    loss, share = number(path.get("loss")), number(path.get("share"))
    return {
        "path": label,
        "state": "alive" if alive is True else "dead" if alive is False else "?",
        "priority": str(path.get("priority") or "-"),
        "rtt ms": _fixed(path.get("rtt_ms"), 1),
        "owd ms": _fixed(path.get("owd_ms"), 1),
        "queue ms": _fixed(path.get("queue_ms"), 1),
        "jitter ms": _fixed(path.get("jitter_ms"), 1),
        "loss %": "-" if loss is None else f"{loss * 100:.1f}",
        "tx Mbit/s": _fixed(path.get("tx_mbit"), 1) if measured is None else f"{measured[0]:.1f}",
        "rx Mbit/s": _fixed(path.get("rx_mbit"), 1) if measured is None else f"{measured[1]:.1f}",
        "rate Mbit/s": _fixed(path.get("rate_mbit"), 1),
        "delivery Mbit/s": _fixed(path.get("delivery_mbit"), 1),
        "share %": "-" if share is None else f"{share * 100:.0f}",
        "weight": _fixed(path.get("weight"), 2),
        "sent": _bytes(path.get("tx_bytes")),
        "received": _bytes(path.get("rx_bytes")),
        "idle s": _fixed(path.get("idle_s"), 1),
    }


def _fill_shares(rows: list[dict[str, str]]) -> None:
    """Without the data plane's own shares, each path's part of the measured traffic."""
    if any(row["share %"] != "-" for row in rows):
        return
    carried = [
        float(row["tx Mbit/s"]) + float(row["rx Mbit/s"]) for row in rows if row["tx Mbit/s"] != "-"
    ]
    total = sum(carried)
    if len(carried) != len(rows) or total <= 0:
        return
    for row, mbit in zip(rows, carried, strict=True):
        row["share %"] = f"{100 * mbit / total:.0f}"


def _render(rows: list[dict[str, str]]) -> list[str]:
    shown = [c for c in COLUMNS if c in ALWAYS_SHOWN or any(row[c] != "-" for row in rows)]
    if not rows:
        return ["(no paths yet)"]
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in shown}

    def line(cells: dict[str, str]) -> str:
        return "  ".join(
            cells[c].ljust(widths[c])
            if c in ("path", "state", "priority")
            else cells[c].rjust(widths[c])
            for c in shown
        ).rstrip()

    return [line({c: c for c in shown}), *(line(row) for row in rows)]


def _fixed(value: object, digits: int) -> str:
    found = number(value)
    return "-" if found is None else f"{found:.{digits}f}"


def _bytes(value: object) -> str:
    found = number(value)
    if found is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if found >= scale:
            return f"{found / scale:.1f} {unit}"
    return f"{found:.0f} B"


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())
