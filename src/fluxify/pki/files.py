"""The PKI file layout on disk (SPEC §4): names, client-name sanitizing, PEM blocks, file modes."""

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fluxify.errors import PkiError

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600  # keys and bundles (they contain a key)
PUBLIC_FILE_MODE = 0o644  # certificates
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"
CLIENTS_DIR = "clients"
BUNDLES_DIR = "bundles"  # under clients/: <name>.pem, named as the client expects it
KEY_SUFFIX = "-key"
DATED_STAMP_FORMAT = "%Y%m%d-%H%M%S"  # Go layout 20060102-150405, in UTC
MAX_CLIENT_NAME_LENGTH = 64  # X.509 upper bound of a CommonName

_OUTSIDE_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]+")
_DATED_SUFFIX = re.compile(r"-\d{8}-\d{6}$")
_RESERVED_NAMES = frozenset({"ca", "ca-key", "server", "server-key"})
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


@dataclass(frozen=True)
class ServerPkiLayout:
    """Where the server's PKI files live under one directory (default ``./pki``)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / CA_CERT_FILE

    @property
    def ca_key(self) -> Path:
        return self.root / CA_KEY_FILE

    @property
    def server_cert(self) -> Path:
        return self.root / SERVER_CERT_FILE

    @property
    def server_key(self) -> Path:
        return self.root / SERVER_KEY_FILE

    @property
    def clients(self) -> Path:
        return self.root / CLIENTS_DIR

    @property
    def bundles(self) -> Path:
        return self.clients / BUNDLES_DIR

    def client_cert(self, name: str) -> Path:
        return self.clients / f"{name}.pem"

    def client_key(self, name: str) -> Path:
        return self.clients / f"{name}{KEY_SUFFIX}.pem"

    def dated_client_cert(self, name: str, issued_at: datetime) -> Path:
        return self.clients / f"{name}-{issued_at.strftime(DATED_STAMP_FORMAT)}.pem"

    def dated_client_key(self, name: str, issued_at: datetime) -> Path:
        stamp = issued_at.strftime(DATED_STAMP_FORMAT)
        return self.clients / f"{name}-{stamp}{KEY_SUFFIX}.pem"

    def client_bundle(self, name: str) -> Path:
        return self.bundles / f"{name}.pem"


def sanitized_form(raw: str) -> str:
    """The original's rules (reference §3.2): what ``raw`` would become on disk and in the CN.

    Trim whitespace, replace each run of characters outside ``[a-zA-Z0-9_-]`` with ``_``, trim
    leading and trailing ``-``, ``_`` and spaces.
    """
    return _OUTSIDE_NAME_CHARS.sub("_", raw.strip()).strip("-_ ")


def sanitize_client_name(raw: str) -> str:
    """``raw`` (trimmed) as the certificate CN and file stem, or PkiError saying why not.

    A name the original's rules would change is refused rather than changed: "ålice" and
    "lice" would otherwise both become "lice" and the second would silently overwrite the
    first one's files. Names whose files would collide with others are refused too.
    """
    name = sanitized_form(raw)
    if name and name != raw.strip():
        raise PkiError(
            f"client name {raw.strip()!r} holds characters a certificate name cannot have "
            f"(it would be stored as {name!r}); use only letters a-z, digits, '-' and '_', "
            f"for example {name!r}"
        )
    if not name:
        raise PkiError(
            f"client name {raw!r} has no usable characters; use letters, digits, '-' or '_'"
        )
    if len(name) > MAX_CLIENT_NAME_LENGTH:
        raise PkiError(
            f"client name {name!r} is {len(name)} characters long; "
            f"a certificate name holds at most {MAX_CLIENT_NAME_LENGTH}"
        )
    if name.lower() in _RESERVED_NAMES or name.endswith(KEY_SUFFIX):
        raise PkiError(
            f"client name {name!r} would collide with the CA, server or key files; "
            "choose another name"
        )
    if _DATED_SUFFIX.search(name):
        raise PkiError(
            f"client name {name!r} ends like a date stamp and would collide with dated "
            "certificate files; choose another name"
        )
    return name


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """Every PEM block in ``data`` as (label, block text including BEGIN/END lines)."""
    blocks = []
    for match in _PEM_BLOCK.finditer(data):
        block = match.group(0)
        if not block.endswith(b"\n"):
            block += b"\n"
        blocks.append((match.group(1).decode("ascii"), block))
    return blocks


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed and make it 0700."""
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        path.chmod(PRIVATE_DIR_MODE)
    except OSError as exc:
        raise PkiError(
            f"cannot create the PKI directory {path}: {exc.strerror}; "
            "check its permissions or choose another one with -pki"
        ) from exc


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` atomically (temporary file, then rename) with exactly ``mode``."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise PkiError(f"cannot write {path}: {exc.strerror}; check the directory") from exc


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise PkiError(f"cannot read {what} {path}: {exc.strerror}") from exc
