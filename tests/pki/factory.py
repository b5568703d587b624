"""Test PKIs built in memory or on disk, including broken ones (foreign CA, expired)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fluxify.pki.certs import Issued, make_ca, make_client_cert, make_server_cert
from fluxify.pki.client_material import ClientMaterial
from fluxify.pki.files import ServerPkiLayout, ensure_private_dir, write_file

NOW = datetime.now(UTC)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def write_server_pki(root: Path, ca: Issued, server: Issued) -> ServerPkiLayout:
    """Lay ``ca`` and ``server`` out as ``ensure_server_pki`` would."""
    layout = ServerPkiLayout(root)
    ensure_private_dir(layout.clients)
    write_file(layout.ca_cert, ca.cert_pem(), 0o644)
    write_file(layout.ca_key, ca.key_pem(), 0o600)
    write_file(layout.server_cert, server.cert_pem(), 0o644)
    write_file(layout.server_key, server.key_pem(), 0o600)
    return layout


def material(ca: Issued, client: Issued, name: str | None = None) -> ClientMaterial:
    """Client material straight from memory (bypasses the loader's own expiry check)."""
    cn = client.cert.subject.rfc4514_string().removeprefix("CN=")
    return ClientMaterial(
        name=name or cn,
        common_name=cn,
        ca_pem=ca.cert_pem(),
        cert_pem=client.cert_pem(),
        key_pem=client.key_pem(),
        not_after=client.cert.not_valid_after_utc,
        files=(Path("<memory>"),),
    )


def client_of(ca: Issued, name: str, *, expired: bool = False) -> ClientMaterial:
    if expired:
        issued = make_client_cert(ca, name, NOW - timedelta(days=30), timedelta(days=2))
    else:
        issued = make_client_cert(ca, name, NOW)
    return material(ca, issued)


def new_ca() -> Issued:
    return make_ca(NOW)


def server_cert(
    ca: Issued, hosts: tuple[str, ...] = LOOPBACK_HOSTS, *, expired: bool = False
) -> Issued:
    if expired:
        return make_server_cert(ca, hosts, NOW - timedelta(days=30), timedelta(days=2))
    return make_server_cert(ca, hosts, NOW)
