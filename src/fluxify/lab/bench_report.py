"""Results of the lab benchmark suite: medians, ratios, the printed table, JSON and the PNG.

Pure apart from writing the two output files: a scenario hands over its samples as
:class:`ScenarioResult`; everything shown is derived here, so the tests need no namespaces.
"""

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG_SCALE_SPREAD = 20.0  # a panel whose bars span more than this factor gets a log axis


@dataclass
class Metric:
    """One measured quantity of a scenario: every run's sample, shown as their median."""

    label: str
    unit: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return median(self.samples)


@dataclass(frozen=True)
class Ratio:
    """``label`` = metric ``numerator`` ÷ metric ``denominator`` (of the same scenario)."""

    label: str
    numerator: str
    denominator: str


@dataclass
class ScenarioResult:
    """What one scenario measured: metrics by key, ratios between them, notes, checks that
    failed (``failures``: the suite then exits 1), or why it was skipped."""

    name: str
    title: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    failures: list[str] = field(default_factory=list)

    def metric(self, key: str, label: str, unit: str) -> Metric:
        """The metric ``key``, created on first use (later labels and units are ignored)."""
        return self.metrics.setdefault(key, Metric(label, unit))

    def add(self, key: str, label: str, unit: str, value: float) -> None:
        self.metric(key, label, unit).samples.append(value)

    def ratio_values(self) -> dict[str, float | None]:
        """Each ratio's value from the medians; None where either side is missing or zero."""
        values: dict[str, float | None] = {}
        for r in self.ratios:
            top, bottom = self.metrics.get(r.numerator), self.metrics.get(r.denominator)
            values[r.label] = ratio(top.median if top else None, bottom.median if bottom else None)
        return values


def median(samples: list[float]) -> float | None:
    """The median of ``samples`` (None if there are none)."""
    return statistics.median(samples) if samples else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded to 3 places; None if undefined."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, 3)


def to_json(results: list[ScenarioResult], *, runs: int, seconds: float) -> dict[str, Any]:
    """The JSON document: per scenario, each metric's median and samples, ratios and notes."""
    scenarios: dict[str, Any] = {}
    for result in results:
        scenarios[result.name] = {
            "title": result.title,
            "skipped": result.skipped,
            "metrics": {
                key: {
                    "label": m.label,
                    "unit": m.unit,
                    "median": m.median,
                    "samples": m.samples,
                }
                for key, m in result.metrics.items()
            },
            "ratios": result.ratio_values(),
            "notes": result.notes,
            "failures": result.failures,
        }
    return {"runs": runs, "seconds": seconds, "scenarios": scenarios}


def render_table(results: list[ScenarioResult]) -> str:
    """The table printed at the end of a run: one block per scenario, medians then ratios."""
    lines: list[str] = []
    for result in results:
        lines.append("")
        lines.append(f"== {result.name}: {result.title}")
        if result.skipped:
            lines.append(f"   skipped: {result.skipped}")
            continue
        for m in result.metrics.values():
            samples = ", ".join(_number(s) for s in m.samples)
            value = _number(m.median) if m.median is not None else "-"
            lines.append(f"   {m.label:<50}{value:>10} {m.unit:<9} [{samples}]")
        for label, quotient in result.ratio_values().items():
            shown = "-" if quotient is None else f"{quotient:.2f}x"
            lines.append(f"   {label:<50}{shown:>10}")
        lines.extend(f"   note: {note}" for note in result.notes)
        lines.extend(f"   FAILED: {failure}" for failure in result.failures)
    return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def write_json(document: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def main_unit(result: ScenarioResult) -> str | None:
    """The unit most of the scenario's metrics share: the one its plot panel shows."""
    units = Counter(m.unit for m in result.metrics.values() if m.median is not None)
    return units.most_common(1)[0][0] if units else None


def write_png(results: list[ScenarioResult], path: Path) -> bool:
    """One bar panel per measured scenario (its main unit); False if matplotlib is missing."""
    try:
        import matplotlib  # noqa: PLC0415 - optional, only for the picture

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    shown = [r for r in results if not r.skipped and main_unit(r) is not None]
    if not shown:
        return False
    columns = min(2, len(shown))
    rows = (len(shown) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.2 * rows), squeeze=False)
    for ax, result in zip(axes.flat, shown, strict=False):
        unit = main_unit(result)
        metrics = [m for m in result.metrics.values() if m.unit == unit and m.median is not None]
        values = [m.median or 0.0 for m in metrics]
        bars = ax.bar(range(len(values)), values, color="tab:blue")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
        many = len(values) > 8
        labels = [m.label if many else _wrap(m.label) for m in metrics]
        ax.set_xticks(range(len(values)), labels, fontsize=7, rotation=60 if many else 0)
        if many:
            for tick in ax.get_xticklabels():
                tick.set_horizontalalignment("right")
        if min(values) > 0 and max(values) / min(values) > LOG_SCALE_SPREAD:
            ax.set_yscale("log")  # raw veth links are ~50x faster than any tunnel
        ax.set_ylabel(unit or "")
        ax.set_title(f"{result.name}: {result.title}", fontsize=9)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    fig.suptitle("Fluxify lab benchmarks (median of runs)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _wrap(label: str, width: int = 14) -> str:
    words, lines, line = label.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)
