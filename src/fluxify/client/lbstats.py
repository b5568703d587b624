"""Live load-balance statistics: per uplink rates, share, probe RTT, loss and state.

Written every second to ``<state_dir>/loadbalance-stats.json`` (replaced atomically; the TUI
reads it) and summarised in the log every ``STATS_LOG_INTERVAL_S``. Interface byte counters come
from ``/sys/class/net/<if>/statistics`` as the kernel keeps them (the whole interface, not only
what Fluxify routed, as in the original).
"""

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fluxify.client.health import HealthMonitor, ProbeReport
from fluxify.client.lbuplinks import LbUplink
from fluxify.linux.statefiles import write_private_bytes

log = logging.getLogger(__name__)

STATS_FILE = "loadbalance-stats.json"
STATS_INTERVAL_S = 1.0
STATS_LOG_INTERVAL_S = 10.0
SYS_CLASS_NET = Path("/sys/class/net")


def read_counter(ifname: str, name: str) -> int | None:
    """``rx_bytes``/``tx_bytes`` of ``ifname``, or None when the interface is gone."""
    try:
        return int((SYS_CLASS_NET / ifname / "statistics" / name).read_text())
    except (OSError, ValueError):
        return None


class LoadBalanceStats:
    """Counter deltas between samples, merged with the monitor's probe reports."""

    def __init__(self, uplinks: Sequence[LbUplink], skipped: Sequence[str], path: Path) -> None:
        self.uplinks = tuple(uplinks)
        self.skipped = tuple(skipped)
        self.path = path
        self._last: dict[str, tuple[int, int]] = {}
        self._last_at: float | None = None
        self._next_log: float | None = None  # the first summary once there is something to say

    def sample(self, monitor: HealthMonitor, routes: dict[str, list[str]], now: float) -> None:
        """Write the stats file (and log a summary when one is due)."""
        body = self.snapshot(monitor, routes, now)
        write_private_bytes(self.path, json.dumps(body, indent=1).encode())
        if self._next_log is None:
            self._next_log = now + STATS_LOG_INTERVAL_S / 2
        elif now >= self._next_log:
            self._next_log = now + STATS_LOG_INTERVAL_S
            _log_summary(body)

    def snapshot(
        self, monitor: HealthMonitor, routes: dict[str, list[str]], now: float
    ) -> dict[str, Any]:
        elapsed = None if self._last_at is None else max(now - self._last_at, 1e-3)
        self._last_at = now
        reports: dict[str, list[ProbeReport]] = {}
        for report in monitor.reports():
            reports.setdefault(report.ifname, []).append(report)
        rows = [self._row(u, reports.get(u.ifname, []), routes, elapsed) for u in self.uplinks]
        total_rate = sum(r["tx_rate_bps"] + r["rx_rate_bps"] for r in rows)
        for row in rows:
            mine = row["tx_rate_bps"] + row["rx_rate_bps"]
            row["share_pct"] = round(100 * mine / total_rate, 1) if total_rate else None
        return {
            "mode": "load-balance",
            "pid": os.getpid(),
            "updated": time.time(),
            "uplinks": rows,
            "routes": routes,
            "active": sum(row["state"] == "up" for row in rows),
            "tx_rate_bps": sum(r["tx_rate_bps"] for r in rows),
            "rx_rate_bps": sum(r["rx_rate_bps"] for r in rows),
            "skipped": list(self.skipped),
        }

    def _row(
        self,
        uplink: LbUplink,
        reports: list[ProbeReport],
        routes: dict[str, list[str]],
        elapsed: float | None,
    ) -> dict[str, Any]:
        tx = read_counter(uplink.ifname, "tx_bytes")
        rx = read_counter(uplink.ifname, "rx_bytes")
        last_tx, last_rx = self._last.get(uplink.ifname, (tx or 0, rx or 0))
        self._last[uplink.ifname] = (tx or 0, rx or 0)

        def rate(now_bytes: int | None, before: int) -> float:
            if elapsed is None or now_bytes is None:
                return 0.0
            return round(max(now_bytes - before, 0) * 8 / elapsed, 1)

        return {
            "ifname": uplink.ifname,
            "gateway4": uplink.gateway4,
            "gateway6": uplink.gateway6,
            "weight": uplink.weight,
            "state": "up" if any(r.state == "up" for r in reports) else "down",
            "in_route": [family for family, hops in routes.items() if uplink.ifname in hops],
            "probes": {r.family: asdict(r) for r in reports},
            "tx_bytes": tx,
            "rx_bytes": rx,
            "tx_rate_bps": rate(tx, last_tx),
            "rx_rate_bps": rate(rx, last_rx),
        }


def _log_summary(body: dict[str, Any]) -> None:
    for row in body["uplinks"]:
        probes = ", ".join(
            f"{family} {p['state']} rtt {p['srtt_ms']} ms loss {p['loss_pct']} %"
            for family, p in row["probes"].items()
        )
        log.info(
            "uplink %s: %s (%s) | TX %s | RX %s | share %s %%",
            row["ifname"],
            row["state"].upper(),
            probes,
            _rate(row["tx_rate_bps"]),
            _rate(row["rx_rate_bps"]),
            row["share_pct"],
        )


def _rate(bps: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.1f} {unit}"
    return f"{bps:.0f} bit/s"
