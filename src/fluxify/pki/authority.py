"""The server's PKI: create or repair the CA and server certificate, issue client certificates.

Unlike the original (reference §3.2), changing ``-hosts`` reissues only the server certificate,
a lost CA key regenerates the CA and the server certificate together (never a broken chain), and
issuing a client never deletes another client's files.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fluxify.errors import PkiError
from fluxify.pki.certs import (
    Issued,
    SanName,
    is_issued_by,
    key_matches,
    load_cert,
    load_key,
    make_ca,
    make_client_cert,
    make_server_cert,
    san_name,
    san_names,
)
from fluxify.pki.files import (
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    ServerPkiLayout,
    ensure_private_dir,
    read_file,
    sanitize_client_name,
    write_file,
)

log = logging.getLogger(__name__)

DEFAULT_HOSTS = ("127.0.0.1", "localhost")  # SPEC §6 -hosts default


@dataclass(frozen=True)
class PkiSetup:
    """The result of :func:`ensure_server_pki`: the layout and one sentence per change made."""

    layout: ServerPkiLayout
    changes: tuple[str, ...]


@dataclass(frozen=True)
class IssuedClient:
    """The files written for one client certificate."""

    name: str
    dated_cert: Path
    dated_key: Path
    cert: Path
    key: Path
    bundle: Path

    def paths(self) -> tuple[Path, ...]:
        return (self.dated_cert, self.dated_key, self.cert, self.key, self.bundle)


def ensure_server_pki(
    root: Path,
    hosts: tuple[str, ...] | None,
    *,
    regenerate: bool = False,
    now: datetime | None = None,
) -> PkiSetup:
    """Create what is missing under ``root`` and repair what no longer fits; never more.

    A new CA is made when asked (``regenerate``) or when ``ca.pem`` or ``ca-key.pem`` is missing;
    the server certificate is (re)issued with a new CA, when missing, when its SANs differ from
    ``hosts``, or when it no longer chains to the CA, matches its key or is in its validity.
    ``hosts`` None keeps the names of an existing server certificate (default names for a new one).
    """
    now = now or datetime.now(UTC)
    layout = ServerPkiLayout(root)
    ensure_private_dir(layout.root)
    ensure_private_dir(layout.clients)
    changes: list[str] = []
    ca = None if regenerate else _load_ca(layout, changes)
    if ca is None:
        replaced = layout.ca_cert.exists() or layout.ca_key.exists()
        ca = make_ca(now)
        _write_pair(layout.ca_cert, layout.ca_key, ca)
        changes.append(
            f"created a new CA in {layout.ca_cert}; client certificates issued by the previous "
            "CA no longer work — reissue them with -new-client"
            if replaced
            else f"created a new CA in {layout.ca_cert}"
        )
        reason: str | None = "a new CA was created"
    else:
        reason = _server_cert_problem(layout, ca, hosts, now)
    if reason is not None:
        hosts = hosts or _previous_hosts(layout) or DEFAULT_HOSTS
        _write_pair(layout.server_cert, layout.server_key, make_server_cert(ca, hosts, now))
        changes.append(
            f"issued a new server certificate {layout.server_cert} for {', '.join(hosts)} "
            f"({reason})"
        )
    for change in changes:
        log.info("pki: %s", change)
    return PkiSetup(layout, tuple(changes))


def load_ca(layout: ServerPkiLayout) -> Issued:
    """The CA certificate and key, or a PkiError saying how to create them."""
    cert = load_cert(read_file(layout.ca_cert, "CA certificate"), str(layout.ca_cert))
    key = load_key(read_file(layout.ca_key, "CA key"), str(layout.ca_key))
    if not key_matches(cert, key):
        raise PkiError(
            f"{layout.ca_key} is not the key of {layout.ca_cert}; restore the matching pair "
            "or regenerate the PKI with -regen"
        )
    return Issued(cert, key)


def issue_client(
    layout: ServerPkiLayout, raw_name: str, *, now: datetime | None = None, reissue: bool = False
) -> IssuedClient:
    """Issue (or reissue) a client certificate; write dated, canonical and bundle files.

    A name that already has a certificate is refused (PkiError) unless ``reissue`` asks for it
    to be replaced: its current bundle then stops working.

    The bundle is ``ca.pem + "\\n" + cert + "\\n" + key`` (Go's "Copy cert+key" format: the last
    certificate is the leaf), saved as ``clients/bundles/<name>.pem`` so it can be copied to the
    client's ``~/.fluxify/<name>.pem`` unchanged.
    """
    now = now or datetime.now(UTC)
    name = sanitize_client_name(raw_name)
    if not reissue and layout.client_cert(name).exists():
        raise PkiError(
            f"client {name!r} already has a certificate ({layout.client_cert(name)}); "
            "reissuing replaces it and stops its current bundle working, so ask for a reissue "
            "explicitly (fluxify-server -new-client NAME -reissue) or choose another name"
        )
    ca = load_ca(layout)
    issued = make_client_cert(ca, name, now)
    ensure_private_dir(layout.clients)
    ensure_private_dir(layout.bundles)
    stamp_time = now.astimezone(UTC)
    result = IssuedClient(
        name=name,
        dated_cert=layout.dated_client_cert(name, stamp_time),
        dated_key=layout.dated_client_key(name, stamp_time),
        cert=layout.client_cert(name),
        key=layout.client_key(name),
        bundle=layout.client_bundle(name),
    )
    _write_pair(result.dated_cert, result.dated_key, issued)
    _write_pair(result.cert, result.key, issued)
    bundle = ca.cert_pem() + b"\n" + issued.cert_pem() + b"\n" + issued.key_pem()
    write_file(result.bundle, bundle, PRIVATE_FILE_MODE)
    log.info("pki: issued client certificate %r (%s)", name, result.cert)
    return result


def _load_ca(layout: ServerPkiLayout, changes: list[str]) -> Issued | None:
    missing = [p for p in (layout.ca_cert, layout.ca_key) if not p.exists()]
    if not missing:
        return load_ca(layout)
    if len(missing) == 1:
        changes.append(f"{missing[0]} is missing, so the CA cannot be used; replacing the whole CA")
    return None


def _server_cert_problem(
    layout: ServerPkiLayout, ca: Issued, hosts: tuple[str, ...] | None, now: datetime
) -> str | None:
    """Why the server certificate must be (re)issued, or None if it is fine."""
    if not layout.server_cert.exists() or not layout.server_key.exists():
        return "it was missing"
    cert = load_cert(read_file(layout.server_cert, "server certificate"), str(layout.server_cert))
    key = load_key(read_file(layout.server_key, "server key"), str(layout.server_key))
    if not is_issued_by(cert, ca.cert):
        return "the old one was not signed by the current CA"
    if not key_matches(cert, key):
        return f"the old one did not match {layout.server_key}"
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return "the old one was outside its validity period"
    have = set(san_names(cert))
    wanted = have if hosts is None else {san_name(host) for host in hosts}
    if wanted != have:
        return f"its names were {_describe(have)}, -hosts asks for {_describe(wanted)}"
    return None


def _previous_hosts(layout: ServerPkiLayout) -> tuple[str, ...]:
    """The names of the current server certificate, if it is readable (kept on a reissue)."""
    try:
        data = layout.server_cert.read_bytes()
        return tuple(str(name) for name in san_names(load_cert(data, str(layout.server_cert))))
    except (OSError, PkiError):
        return ()


def _describe(names: set[SanName]) -> str:
    return ", ".join(sorted(str(name) for name in names)) or "none"


def _write_pair(cert_path: Path, key_path: Path, issued: Issued) -> None:
    write_file(key_path, issued.key_pem(), PRIVATE_FILE_MODE)
    write_file(cert_path, issued.cert_pem(), PUBLIC_FILE_MODE)
