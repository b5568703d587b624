"""Files in a state directory: written whole, private (0600), never through a planted name.

A fixed ``<name>.tmp`` next to the target could be a symlink someone planted there; a name made
by ``mkstemp`` (``O_CREAT | O_EXCL``, mode 0600) cannot, and ``os.replace`` renames the link
itself rather than following it.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path

PRIVATE_STATE_DIR_MODE = 0o700
PRIVATE_STATE_FILE_MODE = 0o600
DEFAULT_STATE_DIR = Path("/run/fluxify")  # undo journals, stats files
STATE_DIR_ENV = "FLUXIFY_STATE_DIR"  # tests and the lab give each process its own


def state_dir_from_env() -> Path:
    """Where journals and stats live: ``$FLUXIFY_STATE_DIR``, else /run/fluxify."""
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def write_private_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once, as a 0600 file of the effective user.

    No fsync: stats and settings are rewritten often and a torn write after a power cut is
    replaced by the next one; the rename alone keeps readers from ever seeing half a file.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_private_json(path: Path, obj: object) -> None:
    """``write_private_bytes`` of ``obj`` as JSON."""
    write_private_bytes(path, json.dumps(obj).encode())


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing; make ``path`` itself 0700 if it is ours.

    A directory owned by someone else is left alone: the journal's ownership check then says
    what is wrong and what to do.
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_STATE_DIR_MODE)
    info = os.lstat(path)
    if info.st_uid == os.geteuid() and info.st_mode & 0o777 != PRIVATE_STATE_DIR_MODE:
        os.chmod(path, PRIVATE_STATE_DIR_MODE, follow_symlinks=False)
