"""Runs one client mode inside the TUI's event loop and stops it cleanly (undo included);
what the TUI touches outside itself (``ClientTuiDeps``); the log forwarded to the screen.

The runners (``BondingClient``, ``LoadBalancer``) return from ``run(stop)`` after restoring the
host; this wrapper owns the task, so Stop, Quit and Ctrl-C all wait for that undo.
"""

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fluxify.client import elevation
from fluxify.client.config import ClientConfig, Mode
from fluxify.tui.client_sources import InterfaceProvider, discover_interfaces


class Runner(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


RunnerFactory = Callable[[ClientConfig, Mode, Path, Path], Runner]


def default_runner(config: ClientConfig, mode: Mode, pki_dir: Path, state_dir: Path) -> Runner:
    """The real runner of ``mode`` (imported here: the TUI starts without the data planes)."""
    if mode is Mode.LOAD_BALANCE:
        from fluxify.client.loadbalance import LoadBalancer  # noqa: PLC0415

        return LoadBalancer(config, state_dir)
    from fluxify.client.bonding import BondingClient  # noqa: PLC0415

    return BondingClient(config, pki_dir, state_dir)


class RunningClient:
    """One started runner: ``stop()`` sets the event and waits until the runner has undone."""

    def __init__(
        self,
        runner: Runner,
        on_exit: Callable[[BaseException | None], None],
    ) -> None:
        self.stop_event = asyncio.Event()
        self._on_exit = on_exit
        self.task = asyncio.create_task(self._run(runner), name="fluxify-client-runner")

    async def _run(self, runner: Runner) -> None:
        error: BaseException | None = None
        try:
            await runner.run(self.stop_event)
        except Exception as exc:  # shown in the UI; the runner has already undone its changes
            logging.getLogger(__name__).debug("runner failed", exc_info=True)
            error = exc
        self._on_exit(error)

    @property
    def done(self) -> bool:
        return self.task.done()

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.shield(self.task)


@dataclass
class ClientTuiDeps:
    """What the TUI touches outside itself; tests replace each part."""

    state_dir: Path
    settings_file: Path | None = None  # None: ~/.fluxify/config.json of the invoking user
    interfaces: InterfaceProvider = discover_interfaces
    runner_factory: RunnerFactory = default_runner
    is_root: Callable[[], bool] = lambda: os.geteuid() == 0
    find_elevator: Callable[[], elevation.Elevator] = elevation.find_elevator
    original_args: tuple[str, ...] = ()


class UiLogHandler(logging.Handler):
    """Forwards log records to ``write`` on the UI's loop (runner threads log too)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, write: Callable[[str, int], None]) -> None:
        super().__init__(logging.INFO)
        self.loop = loop
        self.write = write
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.loop.call_soon_threadsafe(self.write, line, record.levelno)
        except RuntimeError:  # the loop is closed: the UI is gone
            pass
