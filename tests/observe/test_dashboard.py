"""docs/grafana/fluxify.json loads as a Grafana dashboard and queries only metrics we export."""

import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fluxify.observe.metrics import registry_for
from fluxify.observe.statsfile import read_snapshot
from tests.observe.dashboard import load_dashboard, metric_names, queries
from tests.observe.samples import client_stats, server_stats, write_stats

PANEL_TYPES = {"timeseries", "stat"}
PROMQL_WORDS = {"rate", "increase", "sum", "avg", "min", "max", "count", "by", "label_values"}
LABELS = {"job", "identity", "path", "reason", "session", "priority"}


def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name the collector exports for full snapshots (today's and the engine's)."""
    found = set()
    for mode, body in (
        ("bonding", client_stats(engine=True)),
        ("server", server_stats(engine=True)),
        ("bonding", client_stats()),
    ):
        snapshot = read_snapshot(write_stats(tmp_path / f"{mode}.json", body), mode)
        text = generate_latest(registry_for(lambda s=snapshot: s, "client")).decode()  # type: ignore[misc]
        for family in text_string_to_metric_families(text):
            found |= {sample.name for sample in family.samples}
    return found


def test_the_dashboard_is_well_formed() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "fluxify" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 10
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h"))
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
    names = [v["name"] for v in dashboard["templating"]["list"]]
    for expr in queries(dashboard):
        for variable in re.findall(r"\$(\w+)", expr):
            assert variable in names or variable.startswith("__"), (variable, expr)


def test_queries_use_only_exported_metrics(tmp_path: Path) -> None:
    dashboard = load_dashboard()
    exported = exported_names(tmp_path)
    unknown = metric_names(dashboard) - exported
    assert not unknown, f"the dashboard queries metrics nothing exports: {sorted(unknown)}"
    for expr in queries(dashboard):
        words = set(re.findall(r"(?<![\w$])([a-z_][a-z0-9_]*)\s*(?=[({=~!,)])", expr))
        assert words <= PROMQL_WORDS | LABELS | exported, (words, expr)
