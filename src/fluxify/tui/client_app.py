"""The client TUI (SPEC §7). Not built yet: issue 7."""

from fluxify.client.config import ClientConfig
from fluxify.errors import FluxifyError


def run_client_tui(config: ClientConfig) -> int:
    raise FluxifyError("the client TUI is not implemented yet: use -b (bonding) or -l")
