"""The Grafana dashboard in docs/grafana/ and the metric names its queries use."""

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "fluxify.json"
METRIC = re.compile(r"\b((?:fluxify|process)_[a-z0-9_]+)\b")


def load_dashboard() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return body


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def metric_names(dashboard: dict[str, Any]) -> set[str]:
    return {name for expr in queries(dashboard) for name in METRIC.findall(expr)}
