"""Link priorities in the client TUI, through the pilot: each selected interface shows primary or
backup, a click on that toggle (or ``p``) flips it, and the choice is saved and started with."""

from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import DataTable, SelectionList

from fluxify.client.config import ClientConfig, Mode
from fluxify.client.settings import StoredSettings, load_settings, merged_config
from fluxify.tui.client_app import ClientApp
from fluxify.tui.client_widgets import InterfacePicker
from tests.tui.client_fakes import SIZE, Runners, make_client_app
from tests.tui.conditions import until
from tests.tui.test_client_app import click_iface, started, status

STORED = StoredSettings(
    server="vpn.example:9000", ifaces=("eth0", "eth1"), client="alice", backup=("eth1",)
)


def row_text(app: ClientApp, name: str) -> str:
    """The interface's row as it is on screen."""
    index = [info.name for info in app.interfaces].index(name)
    return app.query_one(InterfacePicker).render_line(index).text


def priority_shown(app: ClientApp, name: str) -> str | None:
    text = row_text(app, name)
    return next((p for p in ("primary", "backup") if f"[ {p}" in text), None)


async def click_priority(pilot: Pilot[int], app: ClientApp, name: str) -> None:
    """Click the primary/backup toggle where it is drawn on the interface's row."""
    picker = app.query_one(InterfacePicker)
    index = [info.name for info in app.interfaces].index(name)
    x = row_text(app, name).index("[ ")
    inset = picker.content_region.offset - picker.region.offset
    await pilot.click("#ifaces", offset=(inset.x + x + 2, inset.y + index))
    await pilot.pause()


def settings_file(app: ClientApp) -> Path:
    assert app.deps.settings_file is not None
    return app.deps.settings_file


async def test_a_click_on_the_toggle_flips_the_priority_and_saves_it(tmp_path: Path) -> None:
    app = make_client_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await click_iface(pilot, app, "eth0")
        await click_iface(pilot, app, "wlan0")
        assert priority_shown(app, "eth0") == "primary"
        assert priority_shown(app, "wlan0") == "primary"
        assert priority_shown(app, "eth1") is None  # not selected: no priority to choose
        await click_priority(pilot, app, "wlan0")
        assert priority_shown(app, "wlan0") == "backup"
        assert priority_shown(app, "eth0") == "primary"
        # The click set the priority only: the selection is what it was.
        assert app.query_one("#ifaces", SelectionList).selected == ["eth0", "wlan0"]
        assert "Interfaces: 2 (1 backup)" in status(app)
        assert load_settings(settings_file(app)).backup == ("wlan0",)
        await click_priority(pilot, app, "wlan0")
        assert priority_shown(app, "wlan0") == "primary"
        assert load_settings(settings_file(app)).backup == ()


async def test_p_flips_the_highlighted_interface(tmp_path: Path) -> None:
    app = make_client_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await click_iface(pilot, app, "eth1")  # selects it and highlights its row
        await pilot.press("p")
        await pilot.pause()
        assert priority_shown(app, "eth1") == "backup"
        await click_iface(pilot, app, "eth0")
        await click_iface(pilot, app, "eth0")  # highlighted but not selected: nothing to flip
        await pilot.press("p")
        await pilot.pause()
        assert priority_shown(app, "eth0") is None
        assert app.form.backup == {"eth1"}
    assert load_settings(settings_file(app)).backup == ("eth1",)


async def test_saved_backups_come_back_and_start_in_process(tmp_path: Path) -> None:
    runners = Runners()
    app = make_client_app(
        tmp_path, merged_config(ClientConfig(), STORED), stored=STORED, runners=runners
    )
    async with app.run_test(size=SIZE) as pilot:
        assert priority_shown(app, "eth0") == "primary"
        assert priority_shown(app, "eth1") == "backup"
        await click_priority(pilot, app, "eth0")
        await click_priority(pilot, app, "eth1")  # the other way round now
        await pilot.click("#start")
        await until(pilot, "the runner to start", lambda: started(runners))
        assert runners.made[0].config.backup_ifaces == ("eth0",)
        # The live Paths pane shows each path's priority from the stats file.
        table = app.query_one("#stats", DataTable)
        await until(pilot, "the runner's stats", lambda: table.row_count == 2)
        assert [str(table.get_row_at(i)[2]) for i in range(2)] == ["backup", "primary"]
        # Running: the list is locked, a click on the toggle changes nothing.
        await click_priority(pilot, app, "eth0")
        assert app.form.backup == {"eth0"}
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert runners.made[0].torn_down


async def test_the_elevated_relaunch_carries_the_choice(tmp_path: Path) -> None:
    app = make_client_app(
        tmp_path, merged_config(ClientConfig(), STORED), stored=STORED, root=False
    )
    async with app.run_test(size=SIZE) as pilot:
        await click_priority(pilot, app, "eth0")  # now both are backups
        await pilot.click("#start")
        await pilot.pause()
    argv = app.relaunch_argv
    assert argv is not None
    assert argv[argv.index("-ifaces") + 1] == "eth0,eth1"
    assert argv[argv.index("-backup") + 1] == "eth0,eth1"


async def test_load_balance_hides_the_priorities_and_keeps_them(tmp_path: Path) -> None:
    app = make_client_app(tmp_path, merged_config(ClientConfig(), STORED), stored=STORED)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#mode-load-balance")
        await pilot.pause()
        assert app.mode is Mode.LOAD_BALANCE
        assert priority_shown(app, "eth1") is None  # load-balance has no backup uplinks
        await pilot.click("#mode-bonding")
        await pilot.pause()
        assert priority_shown(app, "eth1") == "backup"
    assert load_settings(settings_file(app)).backup == ("eth1",)
