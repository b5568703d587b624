"""What the certificate manager shows and removes: the client certificates under ``clients/``.

Names come from the canonical ``<name>.pem`` and the dated ``<name>-YYYYMMDD-HHMMSS.pem`` files
(reference §5.1). A client's files are matched exactly, so deleting ``alice`` never touches
``alice-2``: a sanitized name cannot end like a date stamp or in ``-key``.
"""

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fluxify.errors import PkiError
from fluxify.pki.certs import common_name, load_cert
from fluxify.pki.files import KEY_SUFFIX, ServerPkiLayout, read_file

_DATED = re.compile(r"^(?P<name>.+)-\d{8}-\d{6}$")


@dataclass(frozen=True)
class ClientEntry:
    """One client in the list; ``warning`` says what is missing ("" when complete)."""

    name: str
    cert: Path  # the newest dated certificate, else the canonical one
    warning: str


@dataclass(frozen=True)
class CertDetails:
    name: str
    common_name: str
    not_before: datetime
    not_after: datetime
    issuer: str
    source: Path
    bundle: Path | None


def list_clients(layout: ServerPkiLayout) -> list[ClientEntry]:
    """Every client with a certificate, sorted by name; a PkiError if ``clients/`` is unreadable."""
    try:
        stems = sorted(
            p.stem
            for p in layout.clients.glob("*.pem")
            if p.is_file() and not p.stem.endswith(KEY_SUFFIX)
        )
    except OSError as exc:
        raise PkiError(f"cannot list {layout.clients}: {exc.strerror}") from exc
    names = sorted({_client_name(stem) for stem in stems})
    return [_entry(layout, name) for name in names]


def _client_name(stem: str) -> str:
    match = _DATED.match(stem)
    return match.group("name") if match else stem


def _entry(layout: ServerPkiLayout, name: str) -> ClientEntry:
    cert = newest_cert(layout, name)
    key = cert.with_name(f"{cert.stem}{KEY_SUFFIX}.pem")
    warning = "" if key.is_file() else f"key missing: {key.name}"
    return ClientEntry(name, cert, warning)


def newest_cert(layout: ServerPkiLayout, name: str) -> Path:
    """The newest dated certificate of ``name`` (stamps sort by time), else ``<name>.pem``."""
    dated = sorted(p for p in layout.clients.glob(f"{name}-*.pem") if _is_dated_of(p.stem, name))
    return dated[-1] if dated else layout.client_cert(name)


def _is_dated_of(stem: str, name: str) -> bool:
    match = _DATED.match(stem)
    return match is not None and match.group("name") == name


def client_files(layout: ServerPkiLayout, name: str) -> list[Path]:
    """Every file of ``name``: dated and canonical certificates and keys, and the bundle."""
    files = [
        p
        for p in layout.clients.glob(f"{name}*.pem")
        if p.stem.removesuffix(KEY_SUFFIX) == name
        or _is_dated_of(p.stem.removesuffix(KEY_SUFFIX), name)
    ]
    bundle = layout.client_bundle(name)
    if bundle.is_file():
        files.append(bundle)
    return sorted(files)


def cert_serial(path: Path) -> int | None:
    """The serial number of the certificate in ``path``; None if it cannot be read."""
    try:
        return load_cert(read_file(path, "client certificate"), str(path)).serial_number
    except PkiError:
        return None


def details(layout: ServerPkiLayout, name: str) -> CertDetails:
    path = newest_cert(layout, name)
    cert = load_cert(read_file(path, "client certificate"), str(path))
    issuer = cert.issuer.rfc4514_string().removeprefix("CN=")
    bundle = layout.client_bundle(name)
    return CertDetails(
        name=name,
        common_name=common_name(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        issuer=issuer,
        source=path,
        bundle=bundle if bundle.is_file() else None,
    )


def delete_client(layout: ServerPkiLayout, name: str) -> list[Path]:
    """Remove every file of ``name``; returns what was removed."""
    removed = []
    for path in client_files(layout, name):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PkiError(f"cannot delete {path}: {exc.strerror}") from exc
        removed.append(path)
    return removed


def delete_all_clients(layout: ServerPkiLayout) -> int:
    """Remove every client certificate, key and bundle (before a new CA makes them useless)."""
    count = 0
    for entry in list_clients(layout):
        count += len(delete_client(layout, entry.name))
    return count
