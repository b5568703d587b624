"""Backup uplinks in the saved settings: stored, merged under -backup, and headless runs."""

from pathlib import Path

import pytest

from fluxify import cli
from fluxify.cli import parse_client_args
from fluxify.client.config import ClientConfig, Mode
from fluxify.client.settings import (
    StoredSettings,
    load_settings,
    merged_config,
    save_settings,
    settings_of,
)
from fluxify.errors import ConfigError

STORED = StoredSettings(server="vpn.example:9000", ifaces=("eth0", "wwan0"), backup=("wwan0",))


def test_backup_round_trips_and_a_go_file_without_it_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    save_settings(STORED, path)
    assert '"backup": [\n    "wwan0"\n  ]' in path.read_text()
    assert load_settings(path) == STORED
    path.write_text('{"server":"vpn","mode":"","ifaces":["eth0","wwan0"],"client":"","pki":""}')
    assert load_settings(path).backup == ()  # what the Go client writes: no backups


def test_a_backup_not_among_the_interfaces_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"ifaces": ["eth0", "wwan0"], "backup": ["wwan0", "gone0", "wwan0"]}')
    assert load_settings(path).backup == ("wwan0",)
    path.write_text('{"ifaces": null, "backup": ["wwan0"]}')
    assert load_settings(path).backup == ()


@pytest.mark.parametrize("value", ['"wwan0"', "[1]", '[""]', "{}"])
def test_a_bad_backup_value_names_the_key(tmp_path: Path, value: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(f'{{"ifaces": ["wwan0"], "backup": {value}}}')
    with pytest.raises(ConfigError, match='"backup" must be a list of interface names'):
        load_settings(path)


def test_the_stored_backup_applies_when_no_backup_flag_is_given() -> None:
    merged = merged_config(parse_client_args(["-b"]), STORED)
    assert merged.ifaces == ("eth0", "wwan0")
    assert merged.backup_ifaces == ("wwan0",)
    # Explicit -ifaces: the stored backups apply to those of them it names.
    merged = merged_config(parse_client_args(["-b", "-ifaces", "wwan0,eth1"]), STORED)
    assert merged.backup_ifaces == ("wwan0",)
    merged = merged_config(parse_client_args(["-b", "-ifaces", "eth0,eth1"]), STORED)
    assert merged.backup_ifaces == ()


def test_an_explicit_backup_flag_wins_over_the_stored_value() -> None:
    merged = merged_config(parse_client_args(["-b", "-backup", "eth0"]), STORED)
    assert merged.ifaces == ("eth0", "wwan0")  # from the settings
    assert merged.backup_ifaces == ("eth0",)
    with pytest.raises(ConfigError, match="-backup 'wlan9' is not one of the interfaces"):
        merged_config(parse_client_args(["-b", "-backup", "wlan9"]), STORED)


def test_the_elevated_relaunch_reads_no_stored_backup() -> None:
    # Its -backup carries the TUI's choice; an empty one means "none" and cannot be explicit.
    config = parse_client_args(["-tui-autostart", "-b", "-ifaces", "eth0,wwan0", "-backup", ""])
    assert merged_config(config, STORED).backup_ifaces == ()


def test_settings_of_keeps_backups_of_the_interfaces_only() -> None:
    config = ClientConfig(ifaces=("eth0", "wwan0"), backup_ifaces=("wwan0", "gone0"))
    stored = settings_of(config, Mode.BONDING)
    assert stored.backup == ("wwan0",)
    assert merged_config(ClientConfig(), stored).backup_ifaces == ("wwan0",)


def test_a_headless_run_merges_the_saved_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fluxify-client -b`` with nothing else runs with the saved interfaces and backups."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.delenv("PKEXEC_UID", raising=False)
    save_settings(STORED, tmp_path / ".fluxify" / "config.json")
    seen: list[ClientConfig] = []

    async def fake_run_bonding(config: ClientConfig, pki: Path, state: Path) -> None:
        seen.append(config)

    monkeypatch.setattr("fluxify.client.bonding.run_bonding", fake_run_bonding)
    monkeypatch.setattr(cli, "_setup_logging", lambda level: None)
    assert cli.client_main(["-b"]) == 0
    assert cli.client_main(["-b", "-backup", "eth0"]) == 0
    assert [(c.ifaces, c.backup_ifaces) for c in seen] == [
        (("eth0", "wwan0"), ("wwan0",)),
        (("eth0", "wwan0"), ("eth0",)),
    ]
