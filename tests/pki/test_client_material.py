"""Every client PKI layout SPEC §4 promises loads; every broken one names the files it saw."""

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from fluxify.errors import PkiError
from fluxify.pki.authority import IssuedClient, ensure_server_pki, issue_client, load_ca
from fluxify.pki.certs import key_pem, load_key, make_client_cert, new_key
from fluxify.pki.client_material import detect_client_name, load_client_material
from fluxify.pki.files import ServerPkiLayout
from fluxify.pki.tls import client_context
from tests.pki.factory import NOW


@pytest.fixture
def server_pki(tmp_path: Path) -> ServerPkiLayout:
    return ensure_server_pki(tmp_path / "server", ("127.0.0.1",)).layout


@pytest.fixture
def alice(server_pki: ServerPkiLayout) -> IssuedClient:
    return issue_client(server_pki, "alice")


@pytest.fixture
def client_dir(tmp_path: Path) -> Path:
    path = tmp_path / "client"
    path.mkdir()
    return path


def _check(material_dir: Path, server_pki: ServerPkiLayout, name: str = "") -> None:
    material = load_client_material(material_dir, name)
    assert material.name == "alice" and material.common_name == "alice"
    assert material.ca_pem.strip() == server_pki.ca_cert.read_bytes().strip()
    assert material.cert_pem == (server_pki.clients / "alice.pem").read_bytes()
    client_context(material)  # the pieces really fit together for OpenSSL


def test_go_bundle_alone(
    alice: IssuedClient, server_pki: ServerPkiLayout, client_dir: Path
) -> None:
    shutil.copy(alice.bundle, client_dir / "alice.pem")
    _check(client_dir, server_pki, "alice")


def test_bundle_with_ca_plus_ca_pem(
    alice: IssuedClient, server_pki: ServerPkiLayout, client_dir: Path
) -> None:
    shutil.copy(alice.bundle, client_dir / "alice.pem")
    shutil.copy(server_pki.ca_cert, client_dir / "ca.pem")
    material = load_client_material(client_dir)
    assert material.files == (client_dir / "alice.pem", client_dir / "ca.pem")


def test_bundle_without_ca_plus_ca_pem(
    alice: IssuedClient, server_pki: ServerPkiLayout, client_dir: Path
) -> None:
    (client_dir / "alice.pem").write_bytes(alice.cert.read_bytes() + alice.key.read_bytes())
    shutil.copy(server_pki.ca_cert, client_dir / "ca.pem")
    _check(client_dir, server_pki)


def test_separate_cert_key_and_ca(
    alice: IssuedClient, server_pki: ServerPkiLayout, client_dir: Path
) -> None:
    shutil.copy(alice.cert, client_dir / "alice.pem")
    shutil.copy(alice.key, client_dir / "alice-key.pem")
    shutil.copy(server_pki.ca_cert, client_dir / "ca.pem")
    _check(client_dir, server_pki)
    assert detect_client_name(client_dir) == "alice"


def test_leaf_first_bundle_also_loads(
    alice: IssuedClient, server_pki: ServerPkiLayout, client_dir: Path
) -> None:
    (client_dir / "alice.pem").write_bytes(
        alice.cert.read_bytes() + server_pki.ca_cert.read_bytes() + alice.key.read_bytes()
    )
    _check(client_dir, server_pki)


def test_go_made_sec1_key_is_accepted(
    alice: IssuedClient, server_pki: ServerPkiLayout, client_dir: Path
) -> None:
    key = load_key(alice.key.read_bytes(), "key")
    sec1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert b"EC PRIVATE KEY" in sec1
    (client_dir / "alice.pem").write_bytes(
        server_pki.ca_cert.read_bytes() + b"\n" + alice.cert.read_bytes() + b"\n" + sec1
    )
    _check(client_dir, server_pki)


def test_no_client_file_names_what_was_looked_at(
    server_pki: ServerPkiLayout, client_dir: Path
) -> None:
    shutil.copy(server_pki.ca_cert, client_dir / "ca.pem")
    (client_dir / "notes.pem").write_text("hello")
    with pytest.raises(PkiError, match=r"no client certificate found .*looked at: notes\.pem"):
        load_client_material(client_dir)


def test_two_bundles_need_a_name(server_pki: ServerPkiLayout, client_dir: Path) -> None:
    for name in ("alice", "bob"):
        shutil.copy(issue_client(server_pki, name).bundle, client_dir / f"{name}.pem")
    with pytest.raises(PkiError, match=r"several client certificates .*alice, bob.*-client"):
        load_client_material(client_dir)
    assert load_client_material(client_dir, "bob").common_name == "bob"


def test_missing_named_file_names_the_path(client_dir: Path) -> None:
    with pytest.raises(PkiError, match=str(client_dir / "carol.pem")):
        load_client_material(client_dir, "carol")


def test_cert_without_key_names_both_files(alice: IssuedClient, client_dir: Path) -> None:
    shutil.copy(alice.cert, client_dir / "alice.pem")
    with pytest.raises(PkiError, match=r"alice-key\.pem does not exist"):
        load_client_material(client_dir, "alice")


def test_missing_ca_says_to_copy_ca_pem(alice: IssuedClient, client_dir: Path) -> None:
    (client_dir / "alice.pem").write_bytes(alice.cert.read_bytes() + alice.key.read_bytes())
    with pytest.raises(PkiError, match=r"copy the server's ca\.pem"):
        load_client_material(client_dir)


def test_key_of_another_issuance_is_refused(
    alice: IssuedClient, server_pki: ServerPkiLayout, client_dir: Path
) -> None:
    shutil.copy(alice.cert, client_dir / "alice.pem")
    (client_dir / "alice-key.pem").write_bytes(key_pem(new_key()))
    shutil.copy(server_pki.ca_cert, client_dir / "ca.pem")
    with pytest.raises(PkiError, match="belongs to the key"):
        load_client_material(client_dir)


def test_expired_certificate_is_refused_locally(
    server_pki: ServerPkiLayout, client_dir: Path
) -> None:
    ca = load_ca(server_pki)
    old = make_client_cert(ca, "alice", NOW - timedelta(days=30), timedelta(days=1))
    (client_dir / "alice.pem").write_bytes(ca.cert_pem() + old.cert_pem() + old.key_pem())
    with pytest.raises(PkiError, match="expired on"):
        load_client_material(client_dir)


def test_encrypted_key_is_refused_clearly(
    alice: IssuedClient, server_pki: ServerPkiLayout, client_dir: Path
) -> None:
    encrypted = load_key(alice.key.read_bytes(), "key").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    (client_dir / "alice.pem").write_bytes(
        server_pki.ca_cert.read_bytes() + alice.cert.read_bytes() + encrypted
    )
    with pytest.raises(PkiError, match="encrypted"):
        load_client_material(client_dir)
