"""Privilege elevation for the TUI (SPEC §7, reference §4.8): relaunch through pkexec or sudo.

The TUI runs unprivileged; Start relaunches the client as root in auto-start mode with the
chosen settings as explicit flags, so the elevated TUI starts at once with the user's PKI path
(pkexec and sudo both reset ``$HOME``). :func:`elevation_argv` is pure; :func:`exec_elevated`
replaces the process.
"""

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from fluxify.client.config import ClientConfig, Mode
from fluxify.errors import FluxifyError
from fluxify.event_loop import EVENT_LOOP_ENV

ELEVATORS = ("pkexec", "sudo")  # the original's order: pkexec when present
AUTOSTART_FLAG = "-tui-autostart"
# Both tools reset the environment; these keep the terminal and Fluxify's own knobs working.
# PKEXEC_UID/SUDO_USER are set by the tools themselves (they find the user's ~/.fluxify).
# FLUXIFY_STATE_DIR is not among them: root replays the undo journal found there, so a user
# must not choose it (a planted journal once wrote /proc/sys/kernel/core_pattern).
PASSED_ENV = (
    "TERM",
    "COLORTERM",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERMINFO",
    "NO_COLOR",
    EVENT_LOOP_ENV,
)


class ElevationError(FluxifyError):
    """Neither pkexec nor sudo is available, or the relaunch failed."""


@dataclass(frozen=True)
class Elevator:
    """How to become root: the tool's absolute path and ``env`` to carry variables across."""

    tool: str
    env: str = "/usr/bin/env"


def needs_elevation() -> bool:
    return os.geteuid() != 0


def find_elevator(which: Callable[[str], str | None] = shutil.which) -> Elevator:
    """pkexec if on PATH, else sudo; an ElevationError when neither is."""
    env = which("env") or "/usr/bin/env"
    for name in ELEVATORS:
        found = which(name)
        if found:
            return Elevator(found, env)
    raise ElevationError(
        "Start needs root and neither pkexec nor sudo is installed; run fluxify-client as root"
    )


def current_program() -> list[str]:
    """The command that runs this client again: the interpreter and the entry script."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is not None and script.is_file():
        return [sys.executable, str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from fluxify.cli import client_main; sys.exit(client_main())",
    ]


def autostart_flags(config: ClientConfig, mode: Mode, pki_dir: Path) -> list[str]:
    """The chosen settings as flags; given last, they win over repeated original flags.

    ``-backup`` is always given, empty for none, so that it also replaces an original
    ``-backup`` (and, in load-balance, keeps the choice for the relaunched TUI to save).
    """
    flags = [AUTOSTART_FLAG, "-l" if mode is Mode.LOAD_BALANCE else "-b"]
    if mode is Mode.BONDING and config.server is not None:
        flags += ["-server", str(config.server)]
    flags += ["-ifaces", ",".join(config.ifaces), "-backup", ",".join(config.backup_ifaces)]
    flags += ["-pki", str(pki_dir.expanduser().absolute())]
    if mode is Mode.BONDING:
        flags += ["-client", config.client_name]
    flags += ["-ctrl", str(config.control_port), "-conns", str(config.connections)]
    return flags


def elevation_argv(
    elevator: Elevator,
    program: Sequence[str],
    original_args: Sequence[str],
    *,
    config: ClientConfig,
    mode: Mode,
    pki_dir: Path,
    environ: dict[str, str] | None = None,
) -> list[str]:
    """``<tool> env VAR=... <program> <original args> <autostart flags>``.

    ``original_args`` keep flags the TUI does not edit (-ips, -gws, -probe, -weights, -v);
    a previous ``-tui-autostart`` is dropped so it appears once.
    """
    environ = os.environ.copy() if environ is None else environ
    assignments = [f"{name}={environ[name]}" for name in PASSED_ENV if name in environ]
    kept = [arg for arg in original_args if arg.lstrip("-") != AUTOSTART_FLAG.lstrip("-")]
    return [
        elevator.tool,
        elevator.env,
        *assignments,
        *program,
        *kept,
        *autostart_flags(config, mode, pki_dir),
    ]


def exec_elevated(argv: Sequence[str]) -> NoReturn:
    """Replace this process with ``argv``; returns only by raising ElevationError."""
    try:
        os.execv(argv[0], list(argv))
    except OSError as exc:
        raise ElevationError(f"could not run {argv[0]} to become root: {exc.strerror}") from exc
