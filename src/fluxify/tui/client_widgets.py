"""The client TUI's two list views: the interface picker and the live per-path stats panel."""

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, SelectionList, Sparkline, Static
from textual.widgets.selection_list import Selection

from fluxify.tui import stats_view
from fluxify.tui.client_sources import InterfaceInfo

STATS_COLUMNS = ("Path", "State", "RTT", "Loss", "TX rate", "RX rate", "Share", "TX", "RX")
SPARKLINE_POINTS = 60  # one per second: the last minute of total throughput


class InterfacePicker(SelectionList[str]):
    """Interfaces with a checkbox; those without a gateway (or down) are red and disabled."""

    def show(self, interfaces: list[InterfaceInfo], chosen: set[str], *, locked: bool) -> None:
        self.clear_options()
        for info in interfaces:
            text = f"{info.name:<12} {info.address or '-':<18} gw {info.gateway or '-'}"
            if info.selectable:
                prompt = Text(text)
            else:
                reason = "not found" if info.address is None and not info.up else info.problem
                prompt = Text(f"{text}  ({reason})", style="red")
            self.add_option(
                Selection(
                    prompt,
                    info.name,
                    info.selectable and info.name in chosen,
                    id=info.name,
                    disabled=not info.selectable,
                )
            )
        self.disabled = locked


class StatsPanel(Vertical):
    """A summary line, one table row per path, and a sparkline of total throughput."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.history: list[float] = []

    def compose(self) -> ComposeResult:
        yield Static("no live statistics", id="stats-summary")
        yield DataTable(id="stats", cursor_type="none", zebra_stripes=True)
        yield Sparkline([], id="spark")

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*STATS_COLUMNS)

    def reset(self) -> None:
        self.history = []
        self.query_one(Sparkline).data = []

    def show(self, view: stats_view.StatsView | None) -> None:
        table = self.query_one(DataTable)
        table.clear()
        summary = self.query_one("#stats-summary", Static)
        if view is None:
            summary.update("no live statistics")
            return
        for row in view.rows:
            table.add_row(
                row.label,
                Text(row.state, style="green" if row.state == "up" else "red"),
                stats_view.number_text(row.rtt_ms, "ms"),
                stats_view.number_text(row.loss_pct, "%"),
                stats_view.rate_text(row.tx_bps),
                stats_view.rate_text(row.rx_bps),
                stats_view.number_text(row.share_pct, "%"),
                stats_view.bytes_text(row.tx_bytes),
                stats_view.bytes_text(row.rx_bytes),
            )
        summary.update(f"{view.summary} | total {stats_view.rate_text(view.total_bps)}")
        self.history = [*self.history, view.total_bps][-SPARKLINE_POINTS:]
        self.query_one(Sparkline).data = self.history
