"""What the user has chosen in the client TUI, and what SPEC §7 still needs before Start.

Pure: the app copies widget values in and reads the run configuration and the settings to save
out, so the rules are tested without a screen.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from fluxify.client.config import ClientConfig, Mode, ServerAddress
from fluxify.client.settings import StoredSettings, parse_server, settings_of
from fluxify.errors import FluxifyError
from fluxify.tui.client_sources import InterfaceInfo

MIN_INTERFACES = 2


@dataclass
class ClientForm:
    """``base`` is the merged command line; the other fields follow the widgets."""

    base: ClientConfig
    mode: Mode
    pki_dir: Path
    server_text: str = ""
    cert_name: str = ""
    chosen: set[str] = field(default_factory=set)
    backup: set[str] = field(default_factory=set)  # of ``chosen`` (others are remembered only)
    interfaces: list[InterfaceInfo] = field(default_factory=list)

    @property
    def selected_ifaces(self) -> list[str]:
        """Chosen interfaces that exist and are selectable now, sorted."""
        usable = {info.name for info in self.interfaces if info.selectable}
        return sorted(name for name in self.chosen if name in usable)

    @property
    def backup_ifaces(self) -> list[str]:
        """Selected interfaces marked backup, sorted."""
        return [name for name in self.selected_ifaces if name in self.backup]

    def server(self) -> ServerAddress | None:
        """The parsed server field, None when empty or not valid."""
        try:
            return parse_server(self.server_text, self.base.control_port)
        except FluxifyError:
            return None

    def missing(self) -> list[str]:
        """What Start still needs, as phrases for the status line ([] when it may start)."""
        needs = []
        if self.mode is Mode.BONDING:
            if not self.server_text:
                needs.append("a server")
            elif self.server() is None:
                needs.append("a valid server host[:port]")
            if not self.cert_name:
                needs.append(f"a client certificate in {self.pki_dir}")
        count = len(self.selected_ifaces)
        if count < MIN_INTERFACES:
            needs.append(f"at least {MIN_INTERFACES} interfaces with a gateway (have {count})")
        return needs

    def run_config(self) -> ClientConfig:
        """The configuration to start with (call only when :meth:`missing` is empty)."""
        return dataclasses.replace(
            self.base,
            mode=self.mode,
            server=self.server(),
            ifaces=tuple(self.selected_ifaces),
            backup_ifaces=tuple(self.backup_ifaces),
            client_name=self.cert_name if self.mode is Mode.BONDING else self.base.client_name,
            pki_dir=self.pki_dir,
        )

    def settings(self) -> StoredSettings:
        """What to save: every choice, including interfaces that are absent right now."""
        config = dataclasses.replace(
            self.base,
            server=self.server() or self.base.server,
            ifaces=tuple(sorted(self.chosen)),
            backup_ifaces=tuple(sorted(self.chosen & self.backup)),
            client_name=self.cert_name or self.base.client_name,
        )
        return settings_of(config, self.mode)
