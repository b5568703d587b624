"""Saved client settings: Go-compatible file, modes 0600/0700, typed errors, explicit flags win."""

import json
import os
import pwd
import stat
from pathlib import Path

import pytest

from fluxify.cli import parse_client_args
from fluxify.client.config import ClientConfig, Mode, ServerAddress
from fluxify.client.settings import (
    StoredSettings,
    invoking_user_home,
    load_settings,
    merged_config,
    save_settings,
    settings_of,
    settings_path,
)
from fluxify.errors import ConfigError

STORED = StoredSettings(
    server="vpn.example:9000",
    mode="load-balance",
    ifaces=("eth0", "wlan0"),
    client="alice",
    pki="/srv/alice-pki",
    ctrl=9443,
    backup=("wlan0",),
)


def test_save_then_load_round_trips_with_private_modes(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".fluxify" / "config.json"
    save_settings(STORED, path)
    assert load_settings(path) == STORED
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    body = json.loads(path.read_text())
    assert body == {
        "server": "vpn.example:9000",
        "mode": "load-balance",
        "ifaces": ["eth0", "wlan0"],
        "client": "alice",
        "pki": "/srv/alice-pki",
        "ctrl": 9443,
        "backup": ["wlan0"],  # not in Go's schema: its decoder ignores the key
    }
    assert path.read_text().startswith('{\n  "server"')  # Go's two-space indent


def test_save_tightens_an_existing_loose_directory(tmp_path: Path) -> None:
    directory = tmp_path / ".fluxify"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    save_settings(STORED, directory / "config.json")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "nope.json") == StoredSettings()


def test_go_written_file_with_nulls_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"server":"","mode":"","ifaces":null,"client":"","pki":"","ctrl":0}')
    assert load_settings(path) == StoredSettings()


def test_bad_json_is_a_config_error_with_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"server": "x",')
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 1.*delete it"):
        load_settings(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[]", "must be a JSON object"),
        ('{"mode": "turbo"}', '"mode" must be "bonding" or "load-balance"'),
        ('{"ifaces": "eth0,eth1"}', '"ifaces" must be a list of interface names'),
        ('{"ctrl": 70000}', '"ctrl" must be a port number'),
        ('{"ctrl": "8443"}', '"ctrl" must be a port number'),
        ('{"server": 5}', '"server" must be a string'),
    ],
)
def test_bad_fields_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_settings(path)


def test_stored_values_fill_what_the_command_line_did_not_give() -> None:
    merged = merged_config(parse_client_args([]), STORED)
    assert merged.server == ServerAddress("vpn.example", 9000)
    assert merged.ifaces == ("eth0", "wlan0")
    assert merged.client_name == "alice"
    assert merged.pki_dir == Path("/srv/alice-pki")
    assert merged.control_port == 9443
    assert merged.mode is Mode.TUI  # the mode flags alone decide the mode


def test_explicit_flags_win_over_stored_values() -> None:
    config = parse_client_args(
        ["-server", "other:1234", "-ifaces", "a,b,c", "-client", "bob", "-pki", "/p", "-ctrl", "1"]
    )
    merged = merged_config(config, STORED)
    assert merged.server == ServerAddress("other", 1234)
    assert merged.ifaces == ("a", "b", "c")
    assert merged.client_name == "bob"
    assert merged.pki_dir == Path("/p")
    assert merged.control_port == 1


def test_stored_server_without_port_uses_the_control_port() -> None:
    merged = merged_config(ClientConfig(), StoredSettings(server="vpn", ctrl=7000))
    assert merged.server == ServerAddress("vpn", 7000)


def test_a_bad_stored_server_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="server 'a b'"):
        merged_config(ClientConfig(), StoredSettings(server="a b"))


def test_stored_tilde_pki_is_the_invoking_users_home() -> None:
    merged = merged_config(ClientConfig(), StoredSettings(pki="~/certs"))
    assert merged.pki_dir == invoking_user_home() / "certs"


def test_settings_of_a_config_round_trip_through_merge() -> None:
    config = ClientConfig(
        server=ServerAddress("::1", 8443),
        ifaces=("x", "y"),
        client_name="c",
        pki_dir=Path("/k"),
    )
    stored = settings_of(config, Mode.BONDING)
    assert stored.server == "[::1]:8443"
    merged = merged_config(ClientConfig(), stored)
    assert (merged.server, merged.ifaces, merged.client_name, merged.pki_dir) == (
        config.server,
        config.ifaces,
        config.client_name,
        config.pki_dir,
    )


def test_settings_live_in_the_sudo_users_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another account than the one running the tests, and a $HOME that is neither's: a
    # version that ignored SUDO_USER/PKEXEC_UID and used $HOME would fail here, even as root.
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PKEXEC_UID", raising=False)
    monkeypatch.setenv("SUDO_USER", "nobody")
    assert Path(nobody.pw_dir) != tmp_path
    assert settings_path() == Path(nobody.pw_dir) / ".fluxify" / "config.json"
    monkeypatch.delenv("SUDO_USER")
    monkeypatch.setenv("PKEXEC_UID", str(nobody.pw_uid))
    assert invoking_user_home() == Path(nobody.pw_dir)
    monkeypatch.setenv("PKEXEC_UID", "not-a-uid")
    assert invoking_user_home() == tmp_path  # nothing usable: this user's own home
    monkeypatch.delenv("PKEXEC_UID")
    monkeypatch.setenv("SUDO_USER", "no-such-user-here")
    assert settings_path() == tmp_path / ".fluxify" / "config.json"


def test_root_saving_for_a_sudo_user_gives_them_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    monkeypatch.setenv("SUDO_USER", "nobody")
    path = tmp_path / ".fluxify" / "config.json"
    save_settings(STORED, path)
    nobody = pwd.getpwnam("nobody")
    assert path.stat().st_uid == nobody.pw_uid
    assert path.parent.stat().st_uid == nobody.pw_uid
