"""The revocation list (``<pki>/revoked.json``): certificate serials the control server refuses.

One JSON object ``{"revoked": [{"serial": "<hex>", "name": ..., "revoked_at": ...}]}``, written
atomically with mode 0600. Revoking a client adds the serials of every certificate file it has
(canonical and dated), so whichever copy a client holds stops working.
"""

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fluxify.errors import PkiError
from fluxify.pki.certs import load_cert
from fluxify.pki.files import (
    KEY_SUFFIX,
    PRIVATE_FILE_MODE,
    ServerPkiLayout,
    read_file,
    write_file,
)

log = logging.getLogger(__name__)

REVOKED_FILE = "revoked.json"


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    name: str
    revoked_at: str  # ISO 8601, UTC


def revoked_path(layout: ServerPkiLayout) -> Path:
    return layout.root / REVOKED_FILE


def load_entries(layout: ServerPkiLayout) -> list[RevokedEntry]:
    """Every entry of the list; [] when there is no file; a PkiError when it is unreadable."""
    path = revoked_path(layout)
    if not path.exists():
        return []
    data = read_file(path, "revocation list")
    try:
        document = json.loads(data)
        return [
            RevokedEntry(int(str(e["serial"]), 16), str(e["name"]), str(e["revoked_at"]))
            for e in document["revoked"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise PkiError(
            f"the revocation list {path} is corrupt ({exc!r}); restore it from a backup, or "
            "delete it and revoke the clients again"
        ) from exc


def load_revoked(layout: ServerPkiLayout) -> frozenset[int]:
    """The revoked certificate serials."""
    return frozenset(entry.serial for entry in load_entries(layout))


def revoked_names(layout: ServerPkiLayout) -> frozenset[str]:
    return frozenset(entry.name for entry in load_entries(layout))


def client_serials(layout: ServerPkiLayout, name: str) -> set[int]:
    """Serials of every certificate file of ``name`` (canonical and dated, keys excluded)."""
    serials = set()
    for path in layout.clients.glob(f"{name}*.pem"):
        stem = path.stem
        if stem.endswith(KEY_SUFFIX) or not path.is_file():
            continue
        rest = stem[len(name) :]
        if rest and not _is_stamp(rest):
            continue  # another client sharing the prefix (alice-2)
        serials.add(load_cert(read_file(path, "client certificate"), str(path)).serial_number)
    return serials


def _is_stamp(rest: str) -> bool:
    # "-YYYYMMDD-HHMMSS"
    parts = rest.split("-")
    return (
        len(parts) == 3
        and parts[0] == ""
        and len(parts[1]) == 8
        and len(parts[2]) == 6
        and (parts[1] + parts[2]).isdigit()
    )


def revoke_client(
    layout: ServerPkiLayout, name: str, *, now: datetime | None = None
) -> list[RevokedEntry]:
    """Add the serials of ``name``'s certificates to the list; returns the new entries."""
    serials = client_serials(layout, name)
    if not serials:
        raise PkiError(f"client {name!r} has no certificate under {layout.clients} to revoke")
    entries = load_entries(layout)
    known = {entry.serial for entry in entries}
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    added = [RevokedEntry(s, name, stamp) for s in sorted(serials) if s not in known]
    if added:
        _save(layout, entries + added)
        log.info("pki: revoked %s (%d certificate(s))", name, len(added))
    return added


def is_client_revoked(layout: ServerPkiLayout, name: str) -> bool:
    """True when every current certificate of ``name`` is on the list."""
    serials = client_serials(layout, name)
    return bool(serials) and serials <= load_revoked(layout)


def _save(layout: ServerPkiLayout, entries: list[RevokedEntry]) -> None:
    document = {
        "revoked": [
            {"serial": f"{e.serial:x}", "name": e.name, "revoked_at": e.revoked_at} for e in entries
        ]
    }
    write_file(
        revoked_path(layout), (json.dumps(document, indent=1) + "\n").encode(), PRIVATE_FILE_MODE
    )


class RevocationWatcher:
    """The revoked serials, re-read when the file's mtime (or size) changes.

    A corrupt or unreadable file keeps the last good set and logs the reason once per change.
    ``generation`` counts the changes of the set, so a reader can tell it moved.
    """

    def __init__(self, layout: ServerPkiLayout) -> None:
        self._layout = layout
        self._stamp: tuple[int, int] | None = None
        self.serials: frozenset[int] = frozenset()
        self.generation = 0
        self.refresh()

    def refresh(self) -> bool:
        """Re-read if the file changed; True when the set of serials changed."""
        try:
            st = os.stat(revoked_path(self._layout))
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            log.warning("revocation list: %s", exc)
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            serials = load_revoked(self._layout)
        except PkiError as exc:
            log.error("%s; keeping the previous list", exc)
            return False
        if serials == self.serials:
            return False
        self.serials = serials
        self.generation += 1
        return True

    def is_revoked(self, serial: int) -> bool:
        self.refresh()
        return serial in self.serials
