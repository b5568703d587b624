"""The certificate manager TUI driven through Textual's pilot: clicks and typing as a user."""

from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Button, Input, OptionList, Static

from fluxify.pki.authority import ensure_server_pki
from fluxify.pki.files import ServerPkiLayout
from fluxify.pki.revocation import is_client_revoked, revoked_names
from fluxify.server.config import ServerConfig
from fluxify.tui.dialogs import ConfirmScreen
from fluxify.tui.server_app import CertManagerApp

SIZE = (120, 40)


def make_app(root: Path) -> CertManagerApp:
    ensure_server_pki(root, None)
    return CertManagerApp(ServerConfig(pki_dir=root), state_dir=root.parent / "state")


def status_text(app: CertManagerApp) -> str:
    return str(app.query_one("#status", Static).render())


def client_names(app: CertManagerApp) -> list[str]:
    clients = app.query_one("#clients", OptionList)
    return [
        opt.id
        for opt in (clients.get_option_at_index(i) for i in range(clients.option_count))
        if opt.id
    ]


async def create_client(app: CertManagerApp, pilot: Pilot[int], name: str) -> None:
    await pilot.click("#new-client")
    app.query_one("#new-client", Input).value = ""
    await pilot.press(*name)
    await pilot.click("#create")
    await app.workers.wait_for_complete()
    await pilot.pause()


async def test_create_client_writes_files_and_lists_it(tmp_path: Path) -> None:
    app = make_app(tmp_path / "pki")
    layout = ServerPkiLayout(tmp_path / "pki")
    async with app.run_test(size=SIZE) as pilot:
        assert client_names(app) == []
        assert "<no details>" in str(app.query_one("#details", Static).render())
        await create_client(app, pilot, "alice")
        assert layout.client_cert("alice").is_file()
        assert layout.client_key("alice").is_file()
        assert layout.client_bundle("alice").is_file()
        assert len(list(layout.clients.glob("alice-*-*.pem"))) == 2  # dated cert + key
        assert client_names(app) == ["alice"]
        assert "Generating alice done" in status_text(app)
        details = str(app.query_one("#details", Static).render())
        assert "CN:       alice" in details
        assert "Issuer:   fluxify-CA" in details
        assert "Expires:" in details


async def test_regenerate_asks_and_cancel_keeps_the_ca(tmp_path: Path) -> None:
    app = make_app(tmp_path / "pki")
    layout = ServerPkiLayout(tmp_path / "pki")
    before = layout.ca_cert.read_bytes()
    async with app.run_test(size=SIZE) as pilot:
        await create_client(app, pilot, "bob")
        await pilot.click("#regenerate")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.click("#cancel")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert layout.ca_cert.read_bytes() == before
        assert layout.client_cert("bob").is_file()

        await pilot.click("#regenerate")
        await pilot.pause()
        await pilot.click("#confirm")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert layout.ca_cert.read_bytes() != before
        assert not layout.client_cert("bob").exists()
        assert client_names(app) == []


async def test_reissue_and_delete_ask_first(tmp_path: Path) -> None:
    app = make_app(tmp_path / "pki")
    layout = ServerPkiLayout(tmp_path / "pki")
    async with app.run_test(size=SIZE) as pilot:
        await create_client(app, pilot, "carol")
        await create_client(app, pilot, "carol-2")
        assert client_names(app) == ["carol", "carol-2"]
        app.query_one("#clients", OptionList).highlighted = 0
        await pilot.pause()
        old = layout.client_cert("carol").read_bytes()
        await pilot.click("#reissue")
        await pilot.pause()
        await pilot.click("#confirm")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert layout.client_cert("carol").read_bytes() != old

        app.query_one("#clients", OptionList).highlighted = 0
        await pilot.pause()
        await pilot.click("#delete")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.click("#confirm")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not layout.client_cert("carol").exists()
        assert not layout.client_bundle("carol").exists()
        assert layout.client_cert("carol-2").is_file()  # a name sharing the prefix survives
        assert client_names(app) == ["carol-2"]
        assert not app.query_one("#delete", Button).disabled


async def test_empty_and_bad_names_are_refused_with_a_message(tmp_path: Path) -> None:
    app = make_app(tmp_path / "pki")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#create")
        await pilot.pause()
        assert "Type a client name" in status_text(app)
        await create_client(app, pilot, "server")
        assert "collide" in status_text(app)
        assert client_names(app) == []


def client_prompts(app: CertManagerApp) -> list[str]:
    clients = app.query_one("#clients", OptionList)
    return [str(clients.get_option_at_index(i).prompt) for i in range(clients.option_count)]


async def test_revoke_asks_first_and_marks_the_client_revoked(tmp_path: Path) -> None:
    app = make_app(tmp_path / "pki")
    layout = ServerPkiLayout(tmp_path / "pki")
    async with app.run_test(size=SIZE) as pilot:
        await create_client(app, pilot, "dave")
        await create_client(app, pilot, "erin")
        app.query_one("#clients", OptionList).highlighted = 0
        await pilot.pause()
        await pilot.click("#revoke")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "Revoke client dave?" in app.screen.question
        await pilot.click("#cancel")
        await pilot.pause()
        assert revoked_names(layout) == frozenset()

        await pilot.click("#revoke")
        await pilot.pause()
        await pilot.click("#confirm")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert revoked_names(layout) == {"dave"}
        assert is_client_revoked(layout, "dave") and not is_client_revoked(layout, "erin")
        assert "Revoking dave done" in status_text(app)
        prompts = client_prompts(app)
        assert "revoked" in prompts[0] and "revoked" not in prompts[1]
        assert client_names(app) == ["dave", "erin"]  # still listed, so it can be reissued
        assert "Status:   revoked" in str(app.query_one("#details", Static).render())
