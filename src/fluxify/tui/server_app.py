"""The server's certificate manager TUI (SPEC §7). Not built yet: issue 7."""

from fluxify.errors import FluxifyError
from fluxify.server.config import ServerConfig


def run_server_tui(config: ServerConfig) -> int:
    raise FluxifyError("the certificate manager TUI (-tui) is not implemented yet")
