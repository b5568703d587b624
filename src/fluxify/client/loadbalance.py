"""Load-balance mode (SPEC §1). Not built yet: issue 6."""

from pathlib import Path

from fluxify.client.config import ClientConfig
from fluxify.errors import FluxifyError


async def run_load_balance(config: ClientConfig, state_dir: Path) -> None:
    raise FluxifyError("load-balance mode (-l) is not implemented yet")
