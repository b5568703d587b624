"""The server's certificate manager TUI (``fluxify-server -tui``, SPEC §7, reference §5.1).

Actions (regenerate the CA and server certificate, create a client certificate, refresh, quit),
the client list with the selected client's details and actions (reissue, revoke, delete, bundle
path), the live sessions of a server running on this host (``sessions_view``) and the PKI paths.
Certificate work runs in a thread, so the screen never freezes.
"""

import asyncio
from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from fluxify.errors import FluxifyError
from fluxify.pki.authority import ensure_server_pki, issue_client
from fluxify.pki.files import ServerPkiLayout, sanitize_client_name
from fluxify.pki.revocation import load_revoked, revoke_client
from fluxify.server.config import DEFAULT_HOSTS, ServerConfig
from fluxify.tui import cert_inventory
from fluxify.tui.dialogs import ConfirmScreen
from fluxify.tui.sessions_view import SessionsView, default_state_dir

NO_CLIENTS = "<no client certificates>"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


class CertManagerApp(App[int]):
    """The certificate manager over the PKI in ``config.pki_dir``."""

    TITLE = "Fluxify certificate manager"
    AUTO_FOCUS = "#new-client"  # typing a name is the common action
    CSS = """
    #top { height: 9; }
    #actions, #status { width: 1fr; height: 100%; border: round $primary; padding: 0 1; }
    #actions Horizontal { height: 1; margin-bottom: 1; }
    #actions Button { min-width: 14; height: 1; border: none; margin-left: 1; }
    #actions Label { width: 1fr; }
    #new-client { width: 1fr; height: 1; border: none; padding: 0 1; }
    #middle { height: 1fr; }
    #clients { width: 1fr; height: 100%; border: round $primary; }
    #detail-box { width: 1fr; border: round $primary; padding: 0 1; }
    #details { height: 1fr; }
    #client-actions { height: 1; }
    #client-actions Button { height: 1; border: none; margin-right: 1; min-width: 10; }
    #sessions { height: 8; border: round $primary; padding: 0 1; overflow-y: auto; }
    #paths { height: 8; border: round $primary; padding: 0 1; }
    """
    BINDINGS = [  # noqa: RUF012 - Textual's idiom
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("f5", "refresh_list", "Refresh"),
    ]

    def __init__(self, config: ServerConfig, state_dir: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.state_dir = state_dir or default_state_dir()
        self.layout_ = ServerPkiLayout(config.pki_dir)
        self.hosts = None if config.hosts == DEFAULT_HOSTS else config.hosts
        self.last_bundle: Path | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="top"):
            with Vertical(id="actions"):
                with Horizontal():
                    yield Label("Regenerate CA and server certificate")
                    yield Button("Regenerate", id="regenerate", variant="error")
                with Horizontal():
                    yield Input(placeholder="new client name", id="new-client")
                    yield Button("Create", id="create", variant="success")
                with Horizontal():
                    yield Label("Reload the client list")
                    yield Button("Refresh", id="refresh")
                with Horizontal():
                    yield Label("")
                    yield Button("Quit", id="quit")
            yield Static("Ready", id="status")
        with Horizontal(id="middle"):
            yield OptionList(id="clients")
            with Vertical(id="detail-box"):
                yield Static("<no details>", id="details")
                with Horizontal(id="client-actions"):
                    yield Button("Reissue", id="reissue")
                    yield Button("Revoke", id="revoke", variant="warning")
                    yield Button("Delete", id="delete", variant="error")
                    yield Button("Bundle path", id="bundle")
        yield SessionsView(self.state_dir, id="sessions")
        yield Static(id="paths")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#status").border_title = "Status"
        self.query_one("#actions").border_title = "Actions"
        self.query_one("#clients").border_title = "Client certificates"
        self.query_one("#detail-box").border_title = "Details"
        self.query_one("#sessions").border_title = "Live sessions"
        self.query_one("#paths").border_title = "Paths"
        self.show_paths()
        self.refresh_clients()

    # -- views -----------------------------------------------------------------------------

    def set_status(self, markup: str) -> None:
        self.query_one("#status", Static).update(markup)

    def show_paths(self) -> None:
        lay = self.layout_
        self.query_one("#paths", Static).update(
            f"CA:          {lay.ca_cert}\nCA key:      {lay.ca_key}\n"
            f"Server:      {lay.server_cert}\nServer key:  {lay.server_key}\n"
            f"Clients:     {lay.clients}\nBundles:     {lay.bundles}"
        )

    @property
    def selected_client(self) -> str | None:
        clients = self.query_one("#clients", OptionList)
        if clients.highlighted is None or clients.option_count == 0:
            return None
        option = clients.get_option_at_index(clients.highlighted)
        return option.id if option.id and not option.disabled else None

    def refresh_clients(self, select: str | None = None) -> None:
        """Rebuild the list, keeping (or moving to) ``select``."""
        select = select or self.selected_client
        clients = self.query_one("#clients", OptionList)
        clients.clear_options()
        try:
            entries = cert_inventory.list_clients(self.layout_)
        except FluxifyError as exc:
            clients.add_option(Option(f"<error: {exc}>", disabled=True))
            entries = []
        try:
            revoked = load_revoked(self.layout_)
        except FluxifyError as exc:
            self.set_status(f"[red]{exc}[/]")
            revoked = frozenset()
        for entry in entries:
            notes = [entry.warning] if entry.warning else []
            if cert_inventory.cert_serial(entry.cert) in revoked:
                notes.insert(0, "revoked")
            prompt = entry.name if not notes else f"{entry.name}  [red]{', '.join(notes)}[/]"
            clients.add_option(Option(prompt, id=entry.name))
        if not entries:
            clients.add_option(Option(NO_CLIENTS, disabled=True))
        names = [entry.name for entry in entries]
        if names:
            clients.highlighted = names.index(select) if select in names else 0
        self.show_details()

    def show_details(self) -> None:
        name = self.selected_client
        for button_id in ("#reissue", "#revoke", "#delete", "#bundle"):
            self.query_one(button_id, Button).disabled = name is None
        details = self.query_one("#details", Static)
        if name is None:
            details.update("<no details>")
            return
        try:
            d = cert_inventory.details(self.layout_, name)
        except FluxifyError as exc:
            details.update(f"[red]{exc}[/]")
            return
        try:
            revoked = cert_inventory.cert_serial(d.source) in load_revoked(self.layout_)
        except FluxifyError:
            revoked = False
        details.update(
            f"Client:   {d.name}\nCN:       {d.common_name}\n"
            f"From:     {d.not_before:{TIME_FORMAT}}\nExpires:  {d.not_after:{TIME_FORMAT}}\n"
            f"Issuer:   {d.issuer}\nFile:     {d.source.name}\n"
            f"Bundle:   {d.bundle or '(none)'}"
            + ("\nStatus:   [red]revoked[/] (Reissue for a new certificate)" if revoked else "")
        )

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.show_details()

    # -- actions ---------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        handlers: dict[str | None, Callable[[], None]] = {
            "regenerate": self.ask_regenerate,
            "create": self.ask_create,
            "refresh": self.action_refresh_list,
            "quit": self.exit,
            "reissue": self.ask_reissue,
            "revoke": self.ask_revoke,
            "delete": self.ask_delete,
            "bundle": self.show_bundle,
        }
        handler = handlers.get(event.button.id)
        if handler is not None:
            handler()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "new-client":
            self.ask_create()

    def action_refresh_list(self) -> None:
        self.refresh_clients()
        self.query_one("#clients").focus()
        self.set_status("[green]Refreshed[/]")

    def ask_regenerate(self) -> None:
        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.run_job("Regenerating CA/server", self._regenerate)

        self.push_screen(
            ConfirmScreen(
                "Regenerate the CA and server certificate and delete ALL client "
                "certificates? Every client needs a new bundle afterwards.",
                "Regenerate",
            ),
            answered,
        )

    def _regenerate(self) -> str | None:
        cert_inventory.delete_all_clients(self.layout_)
        ensure_server_pki(self.layout_.root, self.hosts, regenerate=True)
        return None

    def ask_create(self) -> None:
        raw = self.query_one("#new-client", Input).value
        if not raw.strip():
            self.set_status("[yellow]Type a client name first[/]")
            return
        try:
            name = sanitize_client_name(raw)
        except FluxifyError as exc:
            self.set_status(f"[red]{exc}[/]")
            return
        if self.layout_.client_cert(name).exists():
            self._confirm_issue(name, f"Client {name} exists. Reissue it? This replaces its cert.")
        else:
            self.run_job(f"Generating {name}", lambda: self._issue(name, reissue=False))
        self.query_one("#new-client", Input).value = ""

    def ask_reissue(self) -> None:
        name = self.selected_client
        if name is not None:
            self._confirm_issue(name, f"Reissue client {name}? Its current bundle stops working.")

    def _confirm_issue(self, name: str, question: str) -> None:
        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.run_job(f"Generating {name}", lambda: self._issue(name, reissue=True))

        self.push_screen(ConfirmScreen(question, "Reissue"), answered)

    def _issue(self, name: str, *, reissue: bool) -> str:
        ensure_server_pki(self.layout_.root, self.hosts)
        issued = issue_client(self.layout_, name, reissue=reissue)
        self.last_bundle = issued.bundle
        return issued.name

    def ask_revoke(self) -> None:
        name = self.selected_client
        if name is None:
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.run_job(f"Revoking {name}", lambda: self._revoke(name))

        self.push_screen(
            ConfirmScreen(
                f"Revoke client {name}? The server refuses its certificate and ends its live "
                "session; Reissue gives it a new one.",
                "Revoke",
            ),
            answered,
        )

    def _revoke(self, name: str) -> str:
        revoke_client(self.layout_, name)
        return name

    def ask_delete(self) -> None:
        name = self.selected_client
        if name is None:
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.run_job(f"Deleting {name}", lambda: self._delete(name))

        self.push_screen(
            ConfirmScreen(f"Delete client {name}? This removes its files from disk.", "Delete"),
            answered,
        )

    def _delete(self, name: str) -> None:
        cert_inventory.delete_client(self.layout_, name)

    def show_bundle(self) -> None:
        name = self.selected_client
        if name is None:
            return
        bundle = self.layout_.client_bundle(name)
        if bundle.is_file():
            self.set_status(f"Bundle of {name}: {bundle}\ncopy it to the client as ~/.fluxify/")
        else:
            self.set_status(f"[yellow]{name} has no bundle; Reissue makes one[/]")

    @work(exclusive=True, group="pki")
    async def run_job(self, label: str, job: Callable[[], str | None]) -> None:
        """Run ``job`` in a thread; it returns the client name to select afterwards, or None."""
        self.set_status(f"[yellow]{label} …[/]")
        for button in self.query(Button):
            button.disabled = True
        try:
            select = await asyncio.to_thread(job)
        except FluxifyError as exc:
            self.set_status(f"[red]{label} failed: {exc}[/]")
            select = None
        else:
            self.set_status(f"[green]{label} done[/]")
        finally:
            for button in self.query(Button):
                button.disabled = False
        self.refresh_clients(select)


def run_server_tui(config: ServerConfig) -> int:
    """Run the certificate manager until Quit; the PKI is created if it does not exist."""
    hosts = None if config.hosts == DEFAULT_HOSTS else config.hosts
    ensure_server_pki(config.pki_dir, hosts, regenerate=config.regenerate)
    return CertManagerApp(config).run() or 0
