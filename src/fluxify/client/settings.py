"""Where the client keeps its files: ``~/.fluxify`` of the user who invoked it (SPEC §4)."""

import os
import pwd
from pathlib import Path

SETTINGS_DIR_NAME = ".fluxify"


def invoking_user_home() -> Path:
    """``$SUDO_USER``'s home under sudo (so root finds the user's certificates), else ``$HOME``."""
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user:
        try:
            return Path(pwd.getpwnam(sudo_user).pw_dir)
        except KeyError:
            pass
    return Path.home()


def default_pki_dir() -> Path:
    return invoking_user_home() / SETTINGS_DIR_NAME
