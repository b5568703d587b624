"""The client TUI's two list views: the interface picker and the live per-path stats panel."""

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import DataTable, SelectionList, Sparkline, Static
from textual.widgets.selection_list import Selection

from fluxify.tui import stats_view
from fluxify.tui.client_sources import InterfaceInfo

STATS_COLUMNS = (
    "Path",
    "State",
    "Priority",
    "RTT",
    "Loss",
    "TX rate",
    "RX rate",
    "Share",
    "TX",
    "RX",
)
SPARKLINE_POINTS = 60  # one per second: the last minute of total throughput


PRIORITY_TOGGLE = {False: "[ primary ]", True: "[ backup  ]"}  # keyed by "is a backup"
PRIORITY_STYLE = {False: "bold $success", True: "bold $warning"}


class InterfacePicker(SelectionList[str]):
    """Interfaces with a checkbox; those without a gateway (or down) are red and disabled.

    With priorities shown (bonding), a selected interface ends in a primary/backup toggle: a
    click on it, or ``p`` on the highlighted row, posts :class:`PriorityToggled`; the app
    decides and calls :meth:`show_priorities` with the result.
    """

    BINDINGS = [Binding("p", "toggle_priority", "Primary/backup")]  # noqa: RUF012 - Textual's idiom

    class PriorityToggled(Message):
        """The user asked to flip ``name`` between primary and backup."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: list[InterfaceInfo] = []
        self._backup: set[str] = set()
        self._priorities = False

    def show(
        self,
        interfaces: list[InterfaceInfo],
        chosen: set[str],
        backup: set[str],
        *,
        priorities: bool,
        locked: bool,
    ) -> None:
        self._shown, self._backup, self._priorities = list(interfaces), set(backup), priorities
        self.clear_options()
        for info in interfaces:
            selected = info.selectable and info.name in chosen
            self.add_option(
                Selection(
                    self._prompt(info, selected=selected),
                    info.name,
                    selected,
                    id=info.name,
                    disabled=not info.selectable,
                )
            )
        self.disabled = locked

    def show_priorities(self, backup: set[str], *, priorities: bool) -> None:
        """Redraw the toggles (after a selection, a flip or a mode change), options kept."""
        self._backup, self._priorities = set(backup), priorities
        selected = set(self.selected)
        for info in self._shown:
            prompt = self._prompt(info, selected=info.name in selected)
            self.replace_option_prompt(info.name, prompt)

    def _prompt(self, info: InterfaceInfo, *, selected: bool) -> Content:
        text = f"{info.name:<12} {info.address or '-':<18} gw {info.gateway or '-':<16}"
        if not info.selectable:
            reason = "not found" if info.address is None and not info.up else info.problem
            return Content.styled(f"{text}  ({reason})", "red")
        if not (selected and self._priorities):
            return Content(text)
        backup = info.name in self._backup
        # The link's meta marks the toggle's cells, so a click there is told from one on the row.
        toggle = Content.from_markup(
            "[@click=toggle_priority]$label", label=PRIORITY_TOGGLE[backup]
        )
        return Content(f"{text} ") + toggle.stylize(PRIORITY_STYLE[backup])

    async def _on_click(self, event: events.Click) -> None:
        index = event.style.meta.get("option")
        if "@click" in event.style.meta and index is not None:
            event.prevent_default()  # a click on the toggle flips the priority, not the checkbox
            self.post_message(self.PriorityToggled(self.get_option_at_index(index).value))

    def action_toggle_priority(self) -> None:
        if self.highlighted is None or not self._priorities:
            return
        name = self.get_option_at_index(self.highlighted).value
        if name in self.selected:
            self.post_message(self.PriorityToggled(name))


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
                Text(row.priority or "-", style="yellow" if row.priority == "backup" else ""),
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
