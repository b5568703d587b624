"""Server PKI creation and repair (SPEC §4), client issuance, headless -new-client and -revoke."""

import stat
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from fluxify.cli import server_main
from fluxify.errors import PkiError
from fluxify.pki.authority import ensure_server_pki, issue_client, load_ca
from fluxify.pki.certs import common_name, is_issued_by, san_names
from fluxify.pki.files import ServerPkiLayout, pem_blocks
from fluxify.pki.revocation import RevocationWatcher, load_revoked, revoked_path


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fresh_directory_gets_ca_and_server_cert_with_the_spec_profiles(tmp_path: Path) -> None:
    setup = ensure_server_pki(tmp_path / "pki", ("127.0.0.1", "VPN.example.com"))
    layout = setup.layout
    assert len(setup.changes) == 2
    ca, server = _cert(layout.ca_cert), _cert(layout.server_cert)
    assert common_name(ca) == "fluxify-CA"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert common_name(server) == "fluxify-server"
    assert is_issued_by(server, ca)
    assert san_names(server) == [ip_address("127.0.0.1"), "vpn.example.com"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _mode(layout.root) == _mode(layout.clients) == 0o700
    assert _mode(layout.ca_key) == _mode(layout.server_key) == 0o600


def test_second_run_with_the_same_hosts_changes_nothing(tmp_path: Path) -> None:
    first = ensure_server_pki(tmp_path, ("127.0.0.1", "localhost"))
    before = {p: p.read_bytes() for p in tmp_path.glob("*.pem")}
    again = ensure_server_pki(tmp_path, ("localhost", "127.0.0.1"))
    assert again.changes == ()
    assert {p: p.read_bytes() for p in tmp_path.glob("*.pem")} == before
    assert first.layout == again.layout


def test_changing_hosts_reissues_only_the_server_certificate(tmp_path: Path) -> None:
    layout = ensure_server_pki(tmp_path, ("127.0.0.1", "localhost")).layout
    ca_before = layout.ca_cert.read_bytes(), layout.ca_key.read_bytes()
    client = issue_client(layout, "alice")
    setup = ensure_server_pki(tmp_path, ("203.0.113.5",))
    assert (layout.ca_cert.read_bytes(), layout.ca_key.read_bytes()) == ca_before
    assert len(setup.changes) == 1
    assert "203.0.113.5" in setup.changes[0] and "localhost" in setup.changes[0]
    assert san_names(_cert(layout.server_cert)) == [ip_address("203.0.113.5")]
    assert is_issued_by(_cert(client.cert), _cert(layout.ca_cert))  # old clients still valid


def test_hosts_none_keeps_the_existing_server_names(tmp_path: Path) -> None:
    ensure_server_pki(tmp_path, ("vpn.example.com",))
    assert ensure_server_pki(tmp_path, None).changes == ()
    (tmp_path / "server.pem").unlink()
    ensure_server_pki(tmp_path, None)  # names unknown now: the defaults
    assert san_names(_cert(tmp_path / "server.pem")) == [ip_address("127.0.0.1"), "localhost"]


def test_lost_ca_key_regenerates_the_ca_and_the_server_cert_together(tmp_path: Path) -> None:
    layout = ensure_server_pki(tmp_path, ("127.0.0.1",)).layout
    old_ca = layout.ca_cert.read_bytes()
    layout.ca_key.unlink()
    setup = ensure_server_pki(tmp_path, ("127.0.0.1",))
    assert layout.ca_cert.read_bytes() != old_ca
    assert is_issued_by(_cert(layout.server_cert), _cert(layout.ca_cert))
    assert any("no longer work" in change for change in setup.changes)
    load_ca(layout)  # consistent pair


def test_regenerate_replaces_ca_and_server_but_keeps_the_names(tmp_path: Path) -> None:
    layout = ensure_server_pki(tmp_path, ("10.0.0.1",)).layout
    old = layout.ca_cert.read_bytes(), layout.server_cert.read_bytes()
    ensure_server_pki(tmp_path, None, regenerate=True)
    assert layout.ca_cert.read_bytes() != old[0] and layout.server_cert.read_bytes() != old[1]
    assert is_issued_by(_cert(layout.server_cert), _cert(layout.ca_cert))
    assert san_names(_cert(layout.server_cert)) == [ip_address("10.0.0.1")]


def test_server_cert_of_another_ca_is_reissued(tmp_path: Path) -> None:
    ensure_server_pki(tmp_path / "a", ("127.0.0.1",))
    ensure_server_pki(tmp_path / "b", ("127.0.0.1",))
    for name in ("server.pem", "server-key.pem"):
        (tmp_path / "a" / name).write_bytes((tmp_path / "b" / name).read_bytes())
    setup = ensure_server_pki(tmp_path / "a", ("127.0.0.1",))
    assert "not signed by the current CA" in setup.changes[0]
    assert is_issued_by(_cert(tmp_path / "a/server.pem"), _cert(tmp_path / "a/ca.pem"))


def test_issue_client_writes_dated_canonical_and_bundle_files(tmp_path: Path) -> None:
    layout = ensure_server_pki(tmp_path, ("127.0.0.1",)).layout
    issued = issue_client(layout, " alice ")
    assert issued.name == "alice"
    assert issued.dated_cert.name.startswith("alice-") and issued.dated_key.name.endswith(
        "-key.pem"
    )
    assert issued.dated_cert.read_bytes() == issued.cert.read_bytes()
    assert issued.bundle == layout.clients / "bundles" / "alice.pem"
    for path in (issued.key, issued.dated_key, issued.bundle):
        assert _mode(path) == 0o600
    assert _mode(issued.bundle.parent) == 0o700
    leaf = _cert(issued.cert)
    assert common_name(leaf) == "alice" and is_issued_by(leaf, _cert(layout.ca_cert))
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # Go's format: CA + "\n" + leaf + "\n" + key; the LAST certificate is the leaf.
    bundle = issued.bundle.read_bytes()
    assert bundle == (
        layout.ca_cert.read_bytes()
        + b"\n"
        + issued.cert.read_bytes()
        + b"\n"
        + issued.key.read_bytes()
    )
    labels = [label for label, _ in pem_blocks(bundle)]
    assert labels == ["CERTIFICATE", "CERTIFICATE", "PRIVATE KEY"]


def test_issuing_a_client_never_deletes_another_clients_files(tmp_path: Path) -> None:
    layout = ensure_server_pki(tmp_path, ("127.0.0.1",)).layout
    other = issue_client(layout, "alice-laptop")
    issue_client(layout, "alice")
    issue_client(layout, "alice", reissue=True)
    assert all(path.exists() for path in other.paths())


def test_issue_client_without_a_ca_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="does not exist"):
        issue_client(ServerPkiLayout(tmp_path), "alice")


def test_headless_new_client_from_a_fresh_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "fresh" / "pki"
    assert server_main(["-pki", str(pki), "-new-client", "bob", "-hosts", "127.0.0.1"]) == 0
    out = capsys.readouterr().out
    layout = ServerPkiLayout(pki)
    bundle = layout.client_bundle("bob")
    for path in (layout.ca_cert, layout.server_cert, layout.client_cert("bob"), bundle):
        assert path.exists()
    assert str(bundle) in out and str(layout.client_key("bob")) in out
    for directory in (pki, layout.clients, layout.bundles):
        assert _mode(directory) == 0o700
    for key in (layout.ca_key, layout.server_key, layout.client_key("bob"), bundle):
        assert _mode(key) == 0o600
    dated = [p for p in layout.clients.glob("bob-*.pem") if not p.name.endswith("-key.pem")]
    assert len(dated) == 1 and _mode(dated[0].with_name(dated[0].stem + "-key.pem")) == 0o600


def test_headless_new_client_keeps_the_ca_and_refuses_bad_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    assert server_main(["-pki", str(pki), "-new-client", "a", "-hosts", "vpn.example.com"]) == 0
    ca, server = (pki / "ca.pem").read_bytes(), (pki / "server.pem").read_bytes()
    assert server_main(["-pki", str(pki), "-new-client", "b"]) == 0  # no -hosts: names kept
    assert (pki / "ca.pem").read_bytes() == ca and (pki / "server.pem").read_bytes() == server
    assert server_main(["-pki", str(tmp_path / "other"), "-new-client", "///"]) == 1
    assert "no usable characters" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_headless_revoke_lists_every_certificate_and_reissue_lets_the_client_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    layout = ServerPkiLayout(pki)
    assert server_main(["-pki", str(pki), "-new-client", "alice"]) == 0
    first = _cert(layout.client_cert("alice")).serial_number
    layout.client_cert("alice").rename(layout.clients / "alice-20200101-000000.pem")  # older copy
    assert server_main(["-pki", str(pki), "-new-client", "alice", "-reissue"]) == 0
    assert server_main(["-pki", str(pki), "-new-client", "alice-2"]) == 0
    alice = {first, _cert(layout.client_cert("alice")).serial_number}
    assert len(alice) == 2
    watcher = RevocationWatcher(layout)  # what the control server asks (is_revoked=...)
    capsys.readouterr()

    assert server_main(["-pki", str(pki), "-revoke", "alice"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    assert "revoked 2 certificate(s) of client 'alice'" in out
    assert str(revoked_path(layout)) in out and "-new-client alice -reissue" in out
    assert "within about a second" in out
    assert load_revoked(layout) == alice
    assert all(watcher.is_revoked(serial) for serial in alice)
    assert not watcher.is_revoked(_cert(layout.client_cert("alice-2")).serial_number)

    assert server_main(["-pki", str(pki), "-revoke", "alice"]) == 0  # again: nothing new
    assert "revoked 0 certificate(s)" in capsys.readouterr().out
    assert load_revoked(layout) == alice

    assert server_main(["-pki", str(pki), "-new-client", "alice"]) == 1  # not without asking
    assert "-reissue" in capsys.readouterr().err
    assert watcher.is_revoked(_cert(layout.client_cert("alice")).serial_number)  # left as it was
    assert server_main(["-pki", str(pki), "-new-client", "alice", "-reissue"]) == 0  # the way back
    assert not watcher.is_revoked(_cert(layout.client_cert("alice")).serial_number)


def test_headless_revoke_of_an_unknown_client_names_it_and_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    assert server_main(["-pki", str(pki), "-new-client", "alice"]) == 0
    capsys.readouterr()
    assert server_main(["-pki", str(pki), "-revoke", "nobody"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert "'nobody'" in captured.err and str(ServerPkiLayout(pki).clients) in captured.err
    assert not revoked_path(ServerPkiLayout(pki)).exists()
    assert server_main(["-pki", str(tmp_path / "typo"), "-revoke", "alice"]) == 1
    assert not (tmp_path / "typo").exists()  # revoking never creates a PKI


def test_headless_new_client_refuses_an_existing_name_unless_asked_to_reissue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    layout = ServerPkiLayout(pki)
    assert server_main(["-pki", str(pki), "-new-client", "alice"]) == 0
    bundle = layout.client_bundle("alice").read_bytes()
    capsys.readouterr()

    assert server_main(["-pki", str(pki), "-new-client", "alice"]) == 1
    err = capsys.readouterr().err
    assert "already has a certificate" in err and "-reissue" in err, err
    assert layout.client_bundle("alice").read_bytes() == bundle  # the working bundle is kept

    assert server_main(["-pki", str(pki), "-new-client", "alice", "-reissue"]) == 0
    assert layout.client_bundle("alice").read_bytes() != bundle


def test_reissue_without_new_client_names_both_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        server_main(["-reissue"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-reissue" in err and "-new-client" in err, err
