"""Revocation at the control server: a revoked certificate gets no session, a live one ends."""

import logging
from pathlib import Path

import pytest

from fluxify.cli import server_main
from fluxify.client.control import fetch_session
from fluxify.errors import SessionRefusedError
from fluxify.pki.certs import make_client_cert
from fluxify.pki.client_material import ClientMaterial
from fluxify.pki.files import write_file
from fluxify.pki.revocation import RevocationWatcher, revoke_client
from fluxify.protocol.control import SessionRequest
from fluxify.server.app import BondingServer
from fluxify.server.config import ServerConfig
from fluxify.server.sessions import RemovalReason, Session, SessionTable
from tests.pki.factory import NOW, material
from tests.server.control_harness import Harness, running_server


class LateWatcher:
    """Watches ``<root>/revoked.json``; the layout is only known once the harness runs."""

    def __init__(self) -> None:
        self.watcher: RevocationWatcher | None = None

    def is_revoked(self, serial: int) -> bool:
        return self.watcher is not None and self.watcher.is_revoked(serial)


def on_disk_client(h: Harness, name: str) -> ClientMaterial:
    """A client certificate issued by the harness CA and stored as ``clients/<name>.pem``."""
    issued = make_client_cert(h.ca, name, NOW)
    write_file(h.layout.client_cert(name), issued.cert_pem(), 0o644)
    return material(h.ca, issued)


async def test_a_revoked_certificate_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    late = LateWatcher()
    async with running_server(tmp_path, is_revoked=late.is_revoked) as h:
        late.watcher = RevocationWatcher(h.layout)
        alice, bob = on_disk_client(h, "alice"), on_disk_client(h, "bob")
        revoke_client(h.layout, "alice")
        with pytest.raises(SessionRefusedError, match="without a session"):
            await fetch_session(h.address, alice, SessionRequest("alice"))
        await fetch_session(h.address, bob, SessionRequest("bob"))
    assert [s.identity for s in h.table] == ["bob"]
    assert "refused 'alice': certificate revoked" in caplog.text


async def test_headless_revoke_makes_the_control_server_refuse_the_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    late = LateWatcher()
    async with running_server(tmp_path, is_revoked=late.is_revoked) as h:
        late.watcher = RevocationWatcher(h.layout)
        alice, bob = on_disk_client(h, "alice"), on_disk_client(h, "bob")
        await fetch_session(h.address, alice, SessionRequest("alice"))
        assert server_main(["-pki", str(h.layout.root), "-revoke", "alice"]) == 0
        assert "revoked 1 certificate(s) of client 'alice'" in capsys.readouterr().out
        with pytest.raises(SessionRefusedError, match="without a session"):
            await fetch_session(h.address, alice, SessionRequest("alice"))
        await fetch_session(h.address, bob, SessionRequest("bob"))


async def test_a_live_session_of_a_revoked_identity_is_ended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    late = LateWatcher()
    async with running_server(tmp_path, is_revoked=late.is_revoked) as h:
        server = BondingServer(ServerConfig(pki_dir=h.layout.root), tmp_path / "state")
        server.table = h.table
        server.revocation = late.watcher = RevocationWatcher(h.layout)
        removed: list[tuple[Session, RemovalReason]] = []
        h.table.on_removed(lambda s, r: removed.append((s, r)))
        alice, bob = on_disk_client(h, "alice"), on_disk_client(h, "bob")
        granted = await fetch_session(h.address, alice, SessionRequest("alice"))
        await fetch_session(h.address, bob, SessionRequest("bob"))
        assert server.end_revoked_sessions() == []  # nothing revoked yet

        revoke_client(h.layout, "alice")
        ended = server.end_revoked_sessions()
        assert [s.session_id for s in ended] == [granted.session_id]
        assert [(s.identity, r) for s, r in removed] == [("alice", RemovalReason.REVOKED)]
        assert h.table.by_identity("alice") is None
        assert h.table.by_identity("bob") is not None
        assert server.end_revoked_sessions() == []  # the list did not change since
        with pytest.raises(SessionRefusedError):
            await fetch_session(h.address, alice, SessionRequest("alice"))


def test_sessions_record_the_serial_and_only_revoked_serials_close() -> None:
    table = SessionTable()
    a = table.open("alice", 0.0, serial=0x1234)
    b = table.open("bob", 0.0, serial=0x5678)
    unknown = table.open("carol", 0.0)
    assert a.serial == 0x1234 and unknown.serial == 0
    assert table.close_revoked(frozenset({0x1234, 0})) == [a]
    assert {s.identity for s in table} == {"bob", "carol"}
    assert table.by_id(b.session_id) is b
