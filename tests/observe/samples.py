"""Stats snapshots as the runners write them: today's schema and the bond engine's additions."""

import json
import os
import time
from pathlib import Path
from typing import Any


def path(label: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "label": label,
        "alive": True,
        "rtt_ms": 21.5,
        "weight": 0.6,
        "idle_s": 0.1,
        "tx_packets": 100,
        "tx_bytes": 140_000,
        "rx_packets": 50,
        "rx_bytes": 7_000,
    }
    return {**base, **extra}


ENGINE_FIELDS = {
    "priority": "primary",
    "owd_ms": 10.2,
    "jitter_ms": 1.5,
    "rate_mbit": 42.0,
    "loss": 0.01,
    "share": 0.7,
    "reinjected": 3,
    "queue_ms": 2.5,
    "delivery_mbit": 40.0,
    "duplicated": 4,
}


def client_stats(*, engine: bool = False) -> dict[str, Any]:
    extra = ENGINE_FIELDS if engine else {}
    backup = {**ENGINE_FIELDS, "priority": "backup"} if engine else {}
    body: dict[str, Any] = {
        "session_id": 0x1A2B3C4D,
        "client_ip": "10.8.0.2",
        "client_ip6": "fd00:8::2",
        "reconnects": 1,
        "paths": [path("wan1", **extra), path("wan2", **backup)],
        "drops": {"bad_tag": 2, "replay": 1},
        "reorder": {"hold_ms": 12.0, "skipped_gaps": 4, "released_late": 5},
    }
    if engine:
        body["reorder"] = {"held": 7, "reordered": 6, "released_late": 5, "lost": 2, "hold_ms": 9}
        body["efficiency"] = 0.93
    return body


def server_stats(*, engine: bool = False) -> dict[str, Any]:
    extra = ENGINE_FIELDS if engine else {}
    session: dict[str, Any] = {
        "session_id": 0xDEADBEEF,
        "identity": "alice",
        "inner_v4": "10.8.0.2",
        "idle_s": 0.2,
        "paths": [path("198.18.0.10:40000", **extra), path("198.18.0.11:40001", **extra)],
    }
    if engine:
        session["reorder"] = {
            "held": 1,
            "reordered": 2,
            "released_late": 3,
            "lost": 4,
            "hold_ms": 5,
        }
    body: dict[str, Any] = {
        "sessions": [session],
        "drops": {"unknown_session": 9},
        "tun_packets_read": 1000,
        "tun_packets_written": 2000,
    }
    if engine:
        body["efficiency"] = 0.9
    return body


def write_stats(path_: Path, body: dict[str, Any], *, age_s: float = 0.0) -> Path:
    path_.write_text(json.dumps(body))
    stamp = time.time() - age_s
    os.utime(path_, (stamp, stamp))
    return path_
