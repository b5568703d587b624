"""The elevated relaunch's command line, built without elevating anything."""

from dataclasses import replace
from pathlib import Path

import pytest

from fluxify.cli import parse_client_args
from fluxify.client.config import ClientConfig, Mode, ServerAddress
from fluxify.client.elevation import (
    ElevationError,
    Elevator,
    elevation_argv,
    exec_elevated,
    find_elevator,
    needs_elevation,
)

PROGRAM = ["/venv/bin/python", "/venv/bin/fluxify-client"]
CONFIG = ClientConfig(
    server=ServerAddress("vpn.example", 9000),
    ifaces=("eth0", "wlan0"),
    client_name="alice",
    connections=2,
)


def tools(*present: str) -> dict[str, str]:
    return {name: f"/usr/bin/{name}" for name in (*present, "env")}


def test_pkexec_is_preferred_then_sudo() -> None:
    assert find_elevator(tools("pkexec", "sudo").get) == Elevator("/usr/bin/pkexec")
    assert find_elevator(tools("sudo").get) == Elevator("/usr/bin/sudo")
    with pytest.raises(ElevationError, match="neither pkexec nor sudo"):
        find_elevator(tools().get)


def test_bonding_argv_carries_settings_pki_and_environment() -> None:
    argv = elevation_argv(
        Elevator("/usr/bin/pkexec"),
        PROGRAM,
        ["-v", "-gws", "192.0.2.1,198.51.100.1"],
        config=CONFIG,
        mode=Mode.BONDING,
        pki_dir=Path("/home/u/.fluxify"),
        environ={"TERM": "xterm-256color", "HOME": "/home/u", "FLUXIFY_STATE_DIR": "/tmp/s"},
    )
    assert argv[:3] == ["/usr/bin/pkexec", "/usr/bin/env", "TERM=xterm-256color"]
    assert "HOME=/home/u" not in argv
    # root replays the journal in the state dir: the user must not pick it
    assert not [a for a in argv if a.startswith("FLUXIFY_STATE_DIR")]
    rest = argv[3:]
    assert rest[:2] == PROGRAM
    assert rest[2:5] == ["-v", "-gws", "192.0.2.1,198.51.100.1"]
    # The relaunched command line parses back to the same settings, auto-start, all explicit.
    parsed = parse_client_args(rest[2:])
    assert parsed.tui_autostart
    assert parsed.mode is Mode.BONDING
    assert parsed.server == ServerAddress("vpn.example", 9000)
    assert parsed.ifaces == ("eth0", "wlan0")
    assert parsed.client_name == "alice"
    assert parsed.pki_dir == Path("/home/u/.fluxify")
    assert parsed.verbose
    assert {"server", "ifaces", "client", "pki", "tui_autostart"} <= parsed.explicit


def test_load_balance_argv_has_no_server_and_a_relative_pki_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = elevation_argv(
        Elevator("/usr/bin/sudo"),
        PROGRAM,
        ["-tui-autostart", "-ifaces", "old0,old1"],
        config=CONFIG,
        mode=Mode.LOAD_BALANCE,
        pki_dir=Path("mypki"),
        environ={},
    )
    assert argv[:2] == ["/usr/bin/sudo", "/usr/bin/env"]
    args = argv[2 + len(PROGRAM) :]
    assert args.count("-tui-autostart") == 1
    assert "-server" not in args
    parsed = parse_client_args(args)
    assert parsed.mode is Mode.LOAD_BALANCE
    assert parsed.ifaces == ("eth0", "wlan0")  # the chosen ones, given last, win
    assert parsed.pki_dir == tmp_path / "mypki"


def test_root_needs_no_elevation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert not needs_elevation()
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert needs_elevation()


def test_a_failed_exec_is_an_elevation_error(tmp_path: Path) -> None:
    with pytest.raises(ElevationError, match="could not run"):
        exec_elevated([str(tmp_path / "no-such-pkexec"), "x"])


def test_the_relaunch_carries_the_backup_uplinks() -> None:
    config = replace(CONFIG, backup_ifaces=("wlan0",))
    argv = elevation_argv(
        Elevator("/usr/bin/pkexec"),
        PROGRAM,
        ["-backup", "eth0"],  # the TUI was launched with another choice, since changed
        config=config,
        mode=Mode.BONDING,
        pki_dir=Path("/home/u/.fluxify"),
        environ={},
    )
    args = argv[2 + len(PROGRAM) :]
    assert args[args.index("-backup", 2) + 1] == "wlan0"
    parsed = parse_client_args(args)
    assert parsed.backup_ifaces == ("wlan0",)
    assert "backup" in parsed.explicit


def test_no_backups_are_given_as_an_empty_backup_flag() -> None:
    argv = elevation_argv(
        Elevator("/usr/bin/pkexec"),
        PROGRAM,
        ["-backup", "eth0"],
        config=CONFIG,
        mode=Mode.BONDING,
        pki_dir=Path("/home/u/.fluxify"),
        environ={},
    )
    args = argv[2 + len(PROGRAM) :]
    assert args[args.index("-backup", 2) + 1] == ""
    assert parse_client_args(args).backup_ifaces == ()  # the original -backup is overridden
