"""The client TUI (``fluxify-client`` with no mode flag, SPEC §7, reference §5.2).

Mode switch, server field (disabled in load-balance), client certificate, the interface list
(no-gateway interfaces in red and unselectable; in bonding, each selected one with its
primary/backup toggle), Start/Stop, live per-path stats (priority included) with a throughput
sparkline, and the log. Start is enabled only when SPEC §7's rules hold, and the
status line says what is missing. Not root: Start relaunches through pkexec/sudo in auto-start
mode. Root: the runner runs in this event loop; Stop, Quit and Ctrl-C wait for its undo.
"""

import asyncio
import logging
import sys
import time
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import (
    Button,
    Footer,
    Input,
    Label,
    RadioButton,
    RadioSet,
    RichLog,
    Select,
    SelectionList,
    Static,
)

from fluxify.client import elevation
from fluxify.client.config import ClientConfig, Mode
from fluxify.client.settings import (
    StoredSettings,
    default_pki_dir,
    load_settings,
    merged_config,
    save_settings,
)
from fluxify.errors import FluxifyError
from fluxify.linux.statefiles import state_dir_from_env
from fluxify.tui import stats_view
from fluxify.tui.client_form import ClientForm
from fluxify.tui.client_run import ClientTuiDeps, RunningClient, UiLogHandler
from fluxify.tui.client_sources import InterfaceInfo, client_certificates
from fluxify.tui.client_widgets import InterfacePicker, StatsPanel

STALE_STATS_S = 3.0  # an idle TUI shows another process's stats only while they are this fresh
INTERFACE_REFRESH_S = 10.0
AUTOSTART_DELAY_S = 0.1


class ClientApp(App[int]):
    """The client TUI over ``config`` (flags already merged with the saved settings)."""

    TITLE = "Fluxify client"
    CSS = """
    #top { height: 7; }
    #config { width: 2fr; border: round $primary; padding: 0 1; }
    #config Horizontal { height: 1; margin-bottom: 1; }
    #config Label { width: 8; }
    #config RadioSet { layout: horizontal; width: 1fr; }
    #config RadioButton { margin-right: 2; }
    #config Input, #config Select { width: 1fr; }
    #actions { width: 1fr; border: round $primary; padding: 0 1; layout: grid; grid-size: 2 2; }
    #actions Button { width: 100%; height: 1; border: none; margin: 0 1 1 0; }
    #status { height: 4; border: round $primary; padding: 0 1; }
    #ifaces { height: 1fr; min-height: 5; border: round $primary; }
    #bottom { height: 14; }
    #stats-box { width: 3fr; border: round $primary; }
    #stats-box DataTable { height: 1fr; }
    #stats-summary { height: 1; padding: 0 1; }
    #spark { height: 2; margin: 0 1; }
    #log { width: 2fr; border: round $primary; }
    """
    BINDINGS = [  # noqa: RUF012 - Textual's idiom
        Binding("ctrl+c", "quit", "Quit", priority=True),
        Binding("q", "quit", "Quit"),
        Binding("f5", "refresh_interfaces", "Refresh interfaces"),
    ]

    def __init__(
        self, config: ClientConfig, stored: StoredSettings, deps: ClientTuiDeps, note: str = ""
    ) -> None:
        super().__init__()
        self.config = config
        self.deps = deps
        self.note = note  # e.g. why the saved settings could not be read
        self.save_enabled = not note
        mode = config.mode if config.mode is not Mode.TUI else Mode(stored.mode or "bonding")
        self.form = ClientForm(
            base=config,
            mode=mode,
            pki_dir=config.pki_dir or default_pki_dir(),
            server_text=str(config.server) if config.server else "",
            chosen=set(config.ifaces),
            backup=set(config.backup_ifaces),
        )
        self.running: RunningClient | None = None
        self.started_at = 0.0
        self.relaunch_argv: list[str] | None = None
        self.stats = stats_view.StatsReader(deps.state_dir)
        self._log_handler: UiLogHandler | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="top"):
            with Vertical(id="config"):
                with Horizontal():
                    yield Label("Mode")
                    with RadioSet(id="mode", compact=True):
                        yield RadioButton("bonding", self.mode is Mode.BONDING, id="mode-bonding")
                        yield RadioButton(
                            "load-balance", self.mode is Mode.LOAD_BALANCE, id="mode-load-balance"
                        )
                with Horizontal():
                    yield Label("Server")
                    yield Input(
                        self.form.server_text,
                        placeholder="server host[:port]",
                        id="server",
                        compact=True,
                    )
                with Horizontal():
                    yield Label("Cert")
                    yield Select[str]([], prompt="client certificate", id="cert", compact=True)
            with Vertical(id="actions"):
                yield Button("Start", id="start", variant="success", disabled=True)
                yield Button("Stop", id="stop", variant="error", disabled=True)
                yield Button("Refresh IFs", id="refresh")
                yield Button("Quit", id="quit")
        yield Static(id="status")
        yield InterfacePicker(id="ifaces")
        with Horizontal(id="bottom"):
            yield StatsPanel(id="stats-box")
            yield RichLog(id="log", wrap=True, markup=True, min_width=20)
        yield Footer()

    async def on_mount(self) -> None:
        for selector, title in (
            ("#config", "Config"),
            ("#actions", "Actions"),
            ("#status", "Status"),
            ("#ifaces", "Interfaces (click to select; p or a click on primary/backup flips it)"),
            ("#stats-box", "Paths"),
            ("#log", "Log"),
        ):
            self.query_one(selector).border_title = title
        if self.note:
            self.log_line(f"[red]{self.note}[/]")
        self.apply_mode()
        self.load_certs()
        await self.refresh_interfaces()
        self.set_interval(1.0, self.refresh_stats)
        self.set_interval(INTERFACE_REFRESH_S, self.refresh_interfaces)
        self._log_handler = UiLogHandler(asyncio.get_running_loop(), self._write_log)
        logging.getLogger("fluxify").addHandler(self._log_handler)
        logging.getLogger("fluxify").setLevel(logging.INFO)
        if self.config.tui_autostart:
            self.set_timer(AUTOSTART_DELAY_S, self.autostart)

    def on_unmount(self) -> None:
        if self._log_handler is not None:
            logging.getLogger("fluxify").removeHandler(self._log_handler)

    # -- what the user chose ----------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self.form.mode

    @property
    def interfaces(self) -> list[InterfaceInfo]:
        return self.form.interfaces

    @property
    def cert_name(self) -> str:
        return self.form.cert_name

    @property
    def selected_ifaces(self) -> list[str]:
        return self.form.selected_ifaces

    def save(self) -> None:
        """Save what is on screen (on edits while idle, and on Start)."""
        if not self.save_enabled:
            return
        try:
            save_settings(self.form.settings(), self.deps.settings_file)
        except FluxifyError as exc:
            self.save_enabled = False
            self.log_line(f"[red]{exc}[/]")

    # -- views --------------------------------------------------------------------------------

    def log_line(self, markup: str) -> None:
        self.query_one("#log", RichLog).write(markup)

    def _write_log(self, line: str, level: int) -> None:
        if not self.is_running:
            return
        text = Text(line, style="red" if level >= logging.WARNING else "")
        self.query_one("#log", RichLog).write(text)

    def apply_mode(self) -> None:
        server = self.query_one("#server", Input)
        server.disabled = self.mode is Mode.LOAD_BALANCE or self.running is not None
        server.placeholder = (
            "(unused in load-balance)" if self.mode is Mode.LOAD_BALANCE else "server host[:port]"
        )
        self.query_one("#cert", Select).disabled = server.disabled
        self.update_status()

    def load_certs(self) -> None:
        certs = client_certificates(self.form.pki_dir)
        usable = [c.name for c in certs if not c.error]
        select = self.query_one("#cert", Select)
        select.set_options([(name, name) for name in usable])
        wanted = self.form.cert_name or self.config.client_name
        if wanted in usable:
            select.value = wanted
        elif len(usable) == 1:
            select.value = usable[0]
        self.form.cert_name = select.value if isinstance(select.value, str) else ""
        for cert in certs:
            if cert.error:
                self.log_line(f"[yellow]certificate {cert.name}: {cert.error}[/]")

    async def refresh_interfaces(self) -> None:
        if self.running is not None:
            return  # the list is locked while running (routes are flipped: gateways look gone)
        try:
            found = await asyncio.to_thread(self.deps.interfaces)
        except FluxifyError as exc:
            self.log_line(f"[red]cannot list interfaces: {exc}[/]")
            return
        known = {info.name for info in found}
        found += [InterfaceInfo(n, False, None, None) for n in self.form.chosen - known]
        if found == self.interfaces:
            return
        self.form.interfaces = found
        self.render_interfaces()

    def render_interfaces(self) -> None:
        self.query_one(InterfacePicker).show(
            self.interfaces,
            self.form.chosen,
            self.form.backup,
            priorities=self.mode is Mode.BONDING,
            locked=self.running is not None,
        )
        self.update_status()

    def render_priorities(self) -> None:
        picker = self.query_one(InterfacePicker)
        picker.show_priorities(self.form.backup, priorities=self.mode is Mode.BONDING)

    def update_status(self) -> None:
        state = "IDLE"
        if self.running is not None:
            state = "RUNNING" if self.stats_fresh else "STARTING"
        server = self.form.server_text if self.mode is Mode.BONDING else "(local)"
        line = f"{state} | Mode: {self.mode.value} | Server: {server or '-'}"
        line += f" | Interfaces: {len(self.selected_ifaces)}"
        if self.mode is Mode.BONDING and self.form.backup_ifaces:
            line += f" ({len(self.form.backup_ifaces)} backup)"
        if self.mode is Mode.BONDING:
            line += f" | Cert: {self.cert_name or '[red]missing[/]'}"
        needs = self.form.missing()
        if self.running is None:
            line += "\n" + (f"[yellow]Needs {', '.join(needs)}[/]" if needs else "[green]Ready[/]")
        self.query_one("#status", Static).update(line)
        start = self.query_one("#start", Button)
        start.disabled = bool(needs) or self.running is not None
        self.query_one("#stop", Button).disabled = self.running is None

    @property
    def is_running(self) -> bool:
        return self.running is not None

    @property
    def stats_fresh(self) -> bool:
        try:
            return self.stats.path(self.mode).stat().st_mtime >= self.started_at
        except OSError:
            return False

    def refresh_stats(self) -> None:
        # While idle, a runner in another process (headless) is shown when its file is fresh.
        newer_than = self.started_at if self.running else time.time() - STALE_STATS_S
        panels = self.query(StatsPanel)
        if not panels:
            return  # the 1 s timer can tick once more while the app is shutting down
        panels.first().show(self.stats.read(self.mode, newer_than=newer_than))
        if self.running is not None:
            self.update_status()

    # -- events -------------------------------------------------------------------------------

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        pressed = event.pressed.id
        self.form.mode = Mode.LOAD_BALANCE if pressed == "mode-load-balance" else Mode.BONDING
        self.query_one(StatsPanel).reset()
        self.apply_mode()
        self.render_priorities()
        self.save()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "server" and self.running is None:
            self.form.server_text = event.value.strip()
            self.update_status()
            self.save()

    def on_select_changed(self, event: Select.Changed) -> None:
        if self.running is None:
            self.form.cert_name = event.value if isinstance(event.value, str) else ""
            self.update_status()
            self.save()

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged[str]) -> None:
        if self.running is not None:
            return
        shown = {info.name for info in self.interfaces if info.selectable}
        self.form.chosen = (self.form.chosen - shown) | set(event.selection_list.selected)
        self.render_priorities()
        self.update_status()
        self.save()

    def on_interface_picker_priority_toggled(self, event: InterfacePicker.PriorityToggled) -> None:
        if self.running is not None or self.mode is not Mode.BONDING:
            return
        self.form.backup ^= {event.name}
        self.render_priorities()
        self.update_status()
        self.save()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.start()
        elif event.button.id == "stop":
            self.stop()
        elif event.button.id == "refresh":
            await self.action_refresh_interfaces()
        elif event.button.id == "quit":
            await self.action_quit()

    async def action_refresh_interfaces(self) -> None:
        self.form.interfaces = []
        self.load_certs()
        await self.refresh_interfaces()

    async def action_quit(self) -> None:
        """Quit; a running client is stopped (and the host restored) first."""
        if self.running is not None:
            self.log_line("Stopping before quitting …")
            await self.running.stop()
        self.exit(0)

    # -- start and stop -------------------------------------------------------------------------

    def autostart(self) -> None:
        needs = self.form.missing()
        if needs:
            self.log_line(f"[red]auto-start: cannot start, needs {', '.join(needs)}[/]")
        elif not self.deps.is_root():
            self.log_line("[red]auto-start: still not root after elevation; Start is manual[/]")
        else:
            self.start()

    def start(self) -> None:
        if self.running is not None or self.form.missing():
            return
        config = self.form.run_config()
        self.save()
        if not self.deps.is_root():
            self.elevate(config)
            return
        try:
            runner = self.deps.runner_factory(
                config, self.mode, self.form.pki_dir, self.deps.state_dir
            )
        except FluxifyError as exc:
            self.log_line(f"[red]Start failed: {exc}[/]")
            return
        self.started_at = time.time()
        self.query_one(StatsPanel).reset()
        self.log_line(f"Starting {self.mode.value} over {', '.join(config.ifaces)} …")
        self.running = RunningClient(runner, self._runner_exited)
        self.render_interfaces()
        self.apply_mode()

    def elevate(self, config: ClientConfig) -> None:
        try:
            elevator = self.deps.find_elevator()
        except FluxifyError as exc:
            self.log_line(f"[red]{exc}[/]")
            return
        self.relaunch_argv = elevation.elevation_argv(
            elevator,
            elevation.current_program(),
            self.deps.original_args,
            config=config,
            mode=self.mode,
            pki_dir=self.form.pki_dir,
        )
        self.exit(0)  # run_client_tui execs the relaunch once the terminal is restored

    def _runner_exited(self, error: BaseException | None) -> None:
        self.running = None
        if error is None:
            self.log_line("[green]Stopped; the host is restored[/]")
        else:
            self.log_line(f"[red]Start failed or the client stopped: {error}[/]")
        self.render_interfaces()
        self.apply_mode()
        self.refresh_stats()

    @work(exclusive=True, group="stop")
    async def stop(self) -> None:
        if self.running is None:
            return
        self.query_one("#stop", Button).disabled = True
        self.log_line("Stopping …")
        await self.running.stop()


def run_client_tui(config: ClientConfig, state_dir: Path | None = None) -> int:
    """Run the client TUI; when Start needs root, exec the elevated relaunch afterwards."""
    note = ""
    try:
        stored = load_settings()
        merged = merged_config(config, stored)
    except FluxifyError as exc:
        stored, merged = StoredSettings(), config
        note = f"{exc} (settings are not saved until it is fixed)"
    state = state_dir or state_dir_from_env()
    deps = ClientTuiDeps(state_dir=state, original_args=tuple(sys.argv[1:]))
    app = ClientApp(merged, stored, deps, note)
    result = app.run()
    if app.relaunch_argv is not None:
        elevation.exec_elevated(app.relaunch_argv)
    return result or 0
