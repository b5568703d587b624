"""The client TUI driven through Textual's pilot: clicks and typing as a user would."""

import json
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, RichLog, Select, SelectionList, Static

from fluxify.client.config import ClientConfig, Mode, ServerAddress
from fluxify.client.settings import StoredSettings, load_settings, merged_config
from fluxify.tui.client_app import ClientApp
from tests.tui.client_fakes import SIZE, Runners, make_client_app, write_bonding_stats
from tests.tui.conditions import until


async def click_iface(pilot: Pilot[int], app: ClientApp, name: str) -> None:
    index = [info.name for info in app.interfaces].index(name)
    await pilot.click("#ifaces", offset=(6, 1 + index))
    await pilot.pause()


async def type_server(pilot: Pilot[int], text: str) -> None:
    await pilot.click("#server")
    await pilot.press(*text)
    await pilot.pause()


def started(runners: Runners) -> bool:
    return bool(runners.made) and runners.made[0].started


def start_disabled(app: ClientApp) -> bool:
    return app.query_one("#start", Button).disabled


def status(app: ClientApp) -> str:
    return str(app.query_one("#status", Static).render())


async def test_start_is_disabled_until_server_cert_and_two_interfaces(tmp_path: Path) -> None:
    app = make_client_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        assert app.cert_name == "alice"  # the only bundle is picked
        assert start_disabled(app)
        assert "a server" in status(app)
        await click_iface(pilot, app, "eth0")
        assert start_disabled(app)
        assert "have 1" in status(app)
        await click_iface(pilot, app, "eth1")
        assert start_disabled(app)  # still no server
        await type_server(pilot, "vpn.example:9000")
        assert not start_disabled(app)
        assert "Ready" in status(app)


async def test_no_gateway_interface_cannot_be_selected(tmp_path: Path) -> None:
    app = make_client_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await click_iface(pilot, app, "eth2")
        await click_iface(pilot, app, "eth0")
        assert app.query_one("#ifaces", SelectionList).selected == ["eth0"]
        assert app.selected_ifaces == ["eth0"]
        option = app.query_one("#ifaces", SelectionList).get_option("eth2")
        assert option.disabled


async def test_load_balance_disables_the_server_and_needs_no_cert(tmp_path: Path) -> None:
    app = make_client_app(tmp_path, certs=())
    async with app.run_test(size=SIZE) as pilot:
        assert not app.query_one("#server", Input).disabled
        await click_iface(pilot, app, "eth0")
        await click_iface(pilot, app, "wlan0")
        assert start_disabled(app)
        assert "client certificate" in status(app)
        await pilot.click("#mode-load-balance")
        await pilot.pause()
        assert app.mode is Mode.LOAD_BALANCE
        assert app.query_one("#server", Input).disabled
        assert not start_disabled(app)
        await pilot.click("#mode-bonding")
        await pilot.pause()
        assert not app.query_one("#server", Input).disabled
        assert start_disabled(app)


async def test_settings_are_saved_on_edits_and_reused(tmp_path: Path) -> None:
    app = make_client_app(tmp_path)
    settings_file = app.deps.settings_file
    assert settings_file is not None
    async with app.run_test(size=SIZE) as pilot:
        await type_server(pilot, "vpn.example")
        await click_iface(pilot, app, "eth1")
        await click_iface(pilot, app, "wlan0")
        await pilot.click("#mode-load-balance")
        await pilot.pause()
    stored = load_settings(settings_file)
    assert stored.server == "vpn.example:8443"
    assert stored.ifaces == ("eth1", "wlan0")
    assert stored.mode == "load-balance"
    assert stored.client == "alice"

    # Next launch: the TUI comes back as it was left.
    again = make_client_app(tmp_path / "again", stored=stored, config=_merged(stored))
    async with again.run_test(size=SIZE):
        assert again.mode is Mode.LOAD_BALANCE
        assert again.query_one("#server", Input).value == "vpn.example:8443"
        assert again.query_one("#ifaces", SelectionList).selected == ["eth1", "wlan0"]
        assert not start_disabled(again)


def _merged(stored: StoredSettings) -> ClientConfig:
    return merged_config(ClientConfig(), stored)


async def test_an_explicit_flag_wins_over_the_saved_value(tmp_path: Path) -> None:
    stored = StoredSettings(server="saved:1", ifaces=("eth0", "eth1"))
    config = ClientConfig(server=ServerAddress("flag", 2), explicit=frozenset({"server"}))
    app = make_client_app(tmp_path, merged_config(config, stored), stored=stored)
    async with app.run_test(size=SIZE):
        assert app.query_one("#server", Input).value == "flag:2"
        assert app.selected_ifaces == ["eth0", "eth1"]


async def ready_app(
    tmp_path: Path, runners: Runners | None = None, *, root: bool = True
) -> ClientApp:
    stored = StoredSettings(server="vpn.example:9000", ifaces=("eth0", "eth1"), client="alice")
    config = merged_config(ClientConfig(), stored)
    return make_client_app(tmp_path, config, stored=stored, runners=runners, root=root)


async def test_start_as_root_runs_in_process_shows_stats_and_stop_undoes(tmp_path: Path) -> None:
    runners = Runners()
    app = await ready_app(tmp_path, runners)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#start")
        table = app.query_one("#stats", DataTable)
        await until(pilot, "the runner's first stats", lambda: table.row_count == 2)
        (runner,) = runners.made
        assert runner.started
        assert app.relaunch_argv is None  # root: no elevation, the runner is in-process
        assert runner.config.ifaces == ("eth0", "eth1")
        assert runner.config.server == ServerAddress("vpn.example", 9000)
        assert start_disabled(app)
        assert not app.query_one("#stop", Button).disabled
        assert app.query_one("#ifaces", SelectionList).disabled
        assert app.query_one("#server", Input).disabled
        row = [str(c) for c in table.get_row_at(0)[:4]]
        assert row == ["eth0", "up", "primary", "12.5 ms"]
        assert "RUNNING" in status(app)

        def a_rate() -> bool:
            return any(unit in str(table.get_row_at(0)[5]) for unit in ("kbit/s", "Mbit/s"))

        await until(pilot, "a rate from two stats samples", a_rate)
        await pilot.click("#stop")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert runner.torn_down
        assert app.running is None
        assert not start_disabled(app)
        assert "IDLE" in status(app)


async def test_quit_while_running_tears_down_first(tmp_path: Path) -> None:
    runners = Runners()
    app = await ready_app(tmp_path, runners)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#start")
        await until(pilot, "the runner to start", lambda: started(runners))
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert runners.made[0].torn_down
    assert app.return_value == 0


async def test_a_failed_start_leaves_start_usable_and_says_why(tmp_path: Path) -> None:
    app = await ready_app(tmp_path, Runners(fail="control server refused us"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#start")

        def said_why() -> bool:
            log = " ".join(str(line.text) for line in app.query_one("#log", RichLog).lines)
            return "control server refused us" in " ".join(log.split())

        await until(pilot, "the failure in the log", said_why)
        assert app.running is None
        assert not start_disabled(app)


async def test_start_when_not_root_relaunches_elevated_in_autostart(tmp_path: Path) -> None:
    runners = Runners()
    app = await ready_app(tmp_path, runners, root=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#start")
        await pilot.pause()
    assert runners.made == []
    argv = app.relaunch_argv
    assert argv is not None
    assert argv[0] == "/usr/bin/pkexec"
    assert "-tui-autostart" in argv
    assert argv[argv.index("-ifaces") + 1] == "eth0,eth1"
    assert argv[argv.index("-server") + 1] == "vpn.example:9000"
    assert argv[argv.index("-pki") + 1] == str(tmp_path / "client-pki")
    assert argv[argv.index("-client") + 1] == "alice"


async def test_autostart_as_root_starts_by_itself(tmp_path: Path) -> None:
    runners = Runners()
    stored = StoredSettings()
    config = ClientConfig(
        mode=Mode.BONDING,
        server=ServerAddress("vpn.example", 9000),
        ifaces=("eth0", "wlan0"),
        client_name="alice",
        tui_autostart=True,
    )
    app = make_client_app(tmp_path, config, stored=stored, runners=runners)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, "the runner to start by itself", lambda: started(runners))
        assert runners.made[0].config.ifaces == ("eth0", "wlan0")
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert runners.made[0].torn_down


async def test_stats_table_renders_rows_from_a_stats_file(tmp_path: Path) -> None:
    app = make_client_app(tmp_path)
    write_bonding_stats(tmp_path / "state", ["eth0", "eth1", "eth0#1"], 5_000_000)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one("#stats", DataTable)
        await until(pilot, "the stats rows", lambda: table.row_count == 3)
        assert str(table.get_row_at(1)[1]) == "DEAD"
        assert str(table.get_row_at(0)[8]) == "5.0 MB"
        summary = str(app.query_one("#stats-summary", Static).render())
        assert "session 1234abcd | 10.8.0.2" in summary


async def test_load_balance_stats_file_renders_too(tmp_path: Path) -> None:
    app = make_client_app(tmp_path, stored=StoredSettings(mode="load-balance"))
    body = {
        "mode": "load-balance",
        "uplinks": [
            {
                "ifname": "eth0",
                "state": "up",
                "probes": {"IPv4": {"srtt_ms": 20.0, "loss_pct": 0.0}},
                "tx_bytes": 1000,
                "rx_bytes": 2000,
                "tx_rate_bps": 2_000_000.0,
                "rx_rate_bps": 500.0,
                "share_pct": 75.0,
            }
        ],
        "routes": {"IPv4": ["eth0"]},
        "active": 1,
        "tx_rate_bps": 2_000_000.0,
        "rx_rate_bps": 500.0,
    }
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "loadbalance-stats.json").write_text(json.dumps(body))
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one("#stats", DataTable)
        await until(pilot, "the uplink row", lambda: table.row_count == 1)
        assert [str(c) for c in table.get_row_at(0)] == [
            "eth0",
            "up",
            "-",  # load-balance uplinks have no priority
            "20.0 ms",
            "0.0 %",
            "2.0 Mbit/s",
            "500 bit/s",
            "75.0 %",
            "1.0 kB",
            "2.0 kB",
        ]
        assert "IPv4 via eth0" in str(app.query_one("#stats-summary", Static).render())


async def test_several_certificates_need_a_choice(tmp_path: Path) -> None:
    app = make_client_app(tmp_path, certs=("alice", "bob"))
    async with app.run_test(size=SIZE):
        assert app.cert_name == ""
        assert app.query_one("#cert", Select).value == Select.NULL
        assert "client certificate" in status(app)
