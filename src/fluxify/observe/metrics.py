"""Prometheus ``/metrics`` over a stats snapshot: one custom collector, served on one address.

The collector calls ``read()`` at every scrape and turns whatever the snapshot holds into
metric families; nothing is cached, so a scrape always shows the runner's last write. Unknown
numeric path fields are exported as ``fluxify_path_<field>`` gauges, so a data plane that adds
a field is visible before anyone names it here. Two paths with the same labels keep the first.
"""

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from prometheus_client import ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from fluxify.errors import ConfigError
from fluxify.observe.statsfile import STALE_AFTER_S, Snapshot, number, sessions_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PathField:
    """How one path field becomes a metric: its name, kind, help and unit conversion."""

    name: str
    counter: bool
    help: str
    scale: float = 1.0


# Field of the path dict -> metric. Counters get "_total" from prometheus_client.
PATH_FIELDS: dict[str, PathField] = {
    "alive": PathField("fluxify_path_up", False, "1 while the path is alive"),
    "rtt_ms": PathField("fluxify_path_rtt_seconds", False, "smoothed round trip", 1e-3),
    "owd_ms": PathField("fluxify_path_owd_seconds", False, "one-way delay estimate", 1e-3),
    "jitter_ms": PathField("fluxify_path_jitter_seconds", False, "delay variation", 1e-3),
    "rate_mbit": PathField(
        "fluxify_path_rate_bits_per_second", False, "delivery rate estimate", 1e6
    ),
    "queue_ms": PathField("fluxify_path_queue_seconds", False, "queueing delay estimate", 1e-3),
    "delivery_mbit": PathField(
        "fluxify_path_delivery_bits_per_second", False, "rate the peer reports receiving", 1e6
    ),
    "loss": PathField("fluxify_path_loss_ratio", False, "estimated loss, 0..1"),
    "share": PathField("fluxify_path_share_ratio", False, "share of the traffic, 0..1"),
    "weight": PathField("fluxify_path_weight", False, "scheduler weight relative to the others"),
    "idle_s": PathField("fluxify_path_idle_seconds", False, "time since the path was heard"),
    "tx_packets": PathField("fluxify_path_tx_packets", True, "datagrams sent"),
    "tx_bytes": PathField("fluxify_path_tx_bytes", True, "bytes sent"),
    "rx_packets": PathField("fluxify_path_rx_packets", True, "datagrams received"),
    "rx_bytes": PathField("fluxify_path_rx_bytes", True, "bytes received"),
    "reinjected": PathField("fluxify_path_reinjected", True, "packets sent again on this path"),
    "duplicated": PathField("fluxify_path_duplicated", True, "packets also sent on another path"),
}
PATH_TEXT_FIELDS = ("label", "priority")

EFFICIENCY_HELP = "aggregation efficiency: goodput over the sum of the paths' rates, 0..1"
REORDER_COUNTERS = ("held", "reordered", "released_late", "lost", "skipped_gaps")

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def fluxify_version() -> str:
    try:
        return metadata.version("fluxify")
    except metadata.PackageNotFoundError:
        return "unknown"


class _Families:
    """Metric families by name, created on first use; each label set is added once."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}
        self._seen: set[tuple[str, tuple[str, ...]]] = set()

    def add(
        self,
        name: str,
        help_text: str,
        labels: dict[str, str],
        value: float,
        *,
        counter: bool = False,
    ) -> None:
        if counter and value < 0:
            return
        key = (name, tuple(labels.values()))
        if key in self._seen:
            return
        self._seen.add(key)
        family = self._families.get(name)
        if family is None:
            kind = CounterMetricFamily if counter else GaugeMetricFamily
            family = kind(name, help_text, labels=list(labels))
            self._families[name] = family
        family.add_metric(list(labels.values()), float(value))  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


class StatsCollector(Collector):
    """Metrics of the snapshot ``read()`` returns (None: nothing running, only ``fluxify_up``).

    ``role`` ("server" or "client") labels the build info and ``fluxify_up``.
    """

    def __init__(self, read: Callable[[], Snapshot | None], role: str) -> None:
        self.read = read
        self.role = role

    def collect(self) -> Iterator[Metric]:
        out = _Families()
        out.add(
            "fluxify_build_info",
            "version of the running fluxify",
            {"version": fluxify_version(), "role": self.role},
            1,
        )
        try:
            snapshot = self.read()
        except Exception:  # a scrape never kills the runner; fluxify_up says it failed
            snapshot = None
        fresh = snapshot is not None and snapshot.age_s <= STALE_AFTER_S
        out.add("fluxify_up", "1 while the stats snapshot is fresh", {"role": self.role}, fresh)
        if snapshot is not None:
            out.add("fluxify_stats_age_seconds", "age of the stats snapshot", {}, snapshot.age_s)
            try:
                _snapshot_metrics(out, snapshot)
            except Exception:  # an odd snapshot costs its own series, never the scrape
                log.debug("stats snapshot not fully exported", exc_info=True)
        yield from out


def _snapshot_metrics(out: _Families, snapshot: Snapshot) -> None:
    body = snapshot.body
    sessions = sessions_of(snapshot)
    if snapshot.mode == "server":
        out.add("fluxify_sessions", "live sessions", {}, len(sessions))
    for name, help_text in (
        ("reconnects", "new sessions fetched after the first"),
        ("tun_packets_read", "packets read from the TUN"),
        ("tun_packets_written", "packets written to the TUN"),
    ):
        value = number(body.get(name))
        if value is not None:
            out.add(f"fluxify_{name}", help_text, {}, value, counter=True)
    drops = body.get("drops")
    for reason, count in drops.items() if isinstance(drops, dict) else ():
        value = number(count)
        if value is not None:
            out.add(
                "fluxify_drops",
                "datagrams dropped, by reason",
                {"reason": str(reason)},
                value,
                counter=True,
            )
    if snapshot.mode == "server":
        efficiency = number(body.get("efficiency"))  # the server's, over every session
        if efficiency is not None:
            out.add(
                "fluxify_efficiency_ratio",
                EFFICIENCY_HELP,
                {"session": "", "identity": ""},
                efficiency,
            )
    for session in sessions:
        labels = {"session": session["session"], "identity": session["identity"]}
        idle = number(session.get("idle_s"))
        if idle is not None:
            out.add(
                "fluxify_session_idle_seconds", "time since the session was heard", labels, idle
            )
        efficiency = number(session.get("efficiency"))
        if efficiency is not None:
            out.add("fluxify_efficiency_ratio", EFFICIENCY_HELP, labels, efficiency)
        # The client's stats are one session (reorder dict top level); the server's per session.
        _reorder_metrics(out, session.get("reorder"), labels)
        for path in session["paths"]:
            _path_metrics(out, path, {**labels, "path": str(path.get("label", "?"))})


def _reorder_metrics(out: _Families, reorder: object, labels: dict[str, str]) -> None:
    if not isinstance(reorder, dict):
        return
    for field, raw in reorder.items():
        value = number(raw)
        if value is None:
            continue
        if field == "hold_ms":
            out.add("fluxify_reorder_hold_seconds", "reorder hold time", labels, value / 1000)
        elif field in REORDER_COUNTERS:
            out.add(
                f"fluxify_reorder_{field}", f"reorder buffer: {field}", labels, value, counter=True
            )
        else:
            out.add(f"fluxify_reorder_{_safe(field)}", f"reorder buffer: {field}", labels, value)


def _path_metrics(out: _Families, path: dict[str, Any], labels: dict[str, str]) -> None:
    priority = path.get("priority")
    if isinstance(priority, str):
        out.add(
            "fluxify_path_info",
            "text facts of a path (priority: primary or backup)",
            {**labels, "priority": priority},
            1,
        )
        out.add("fluxify_path_backup", "1 for a backup path", labels, priority == "backup")
    for field, raw in path.items():
        if field in PATH_TEXT_FIELDS:
            continue
        spec = PATH_FIELDS.get(field)
        if field == "alive":
            if isinstance(raw, bool):
                out.add(spec.name, spec.help, labels, raw)  # type: ignore[union-attr]
            continue
        value = number(raw)
        if value is None:
            continue
        if spec is None:
            out.add(f"fluxify_path_{_safe(field)}", f"path field {field}", labels, value)
        else:
            out.add(spec.name, spec.help, labels, value * spec.scale, counter=spec.counter)


def _safe(field: str) -> str:
    return _NAME_UNSAFE.sub("_", str(field)).strip("_").lower() or "unnamed"


def registry_for(read: Callable[[], Snapshot | None], role: str) -> CollectorRegistry:
    """The snapshot's metrics plus the process's own (memory, CPU, open fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(read, role))
    ProcessCollector(registry=registry)
    return registry


@dataclass(frozen=True)
class MetricsServer:
    """A running ``/metrics`` endpoint: the port it got (useful with port 0) and ``stop()``."""

    port: int
    stop: Callable[[], None]


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` only, in a daemon thread.

    Raises ``ConfigError`` naming the address when it cannot be bound.
    """
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as exc:
        raise ConfigError(
            f"-metrics: cannot listen on {_joined(host, port)}: {exc.strerror or exc}"
        ) from None
    bound = int(server.server_address[1])
    log.info("metrics on http://%s/metrics", _joined(host, bound))

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return MetricsServer(bound, stop)


def _joined(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
