"""Root saving settings into a user's home follows no symbolic link the user planted there."""

import os
import pwd
import stat
from pathlib import Path

import pytest

from fluxify.client.settings import StoredSettings, load_settings, save_settings
from fluxify.errors import ConfigError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the finding is root's")
STORED = StoredSettings(server="vpn.example:8443", client="alice")


@pytest.fixture
def as_sudo_from_nobody(monkeypatch: pytest.MonkeyPatch) -> pwd.struct_passwd:
    monkeypatch.setenv("SUDO_USER", "nobody")
    monkeypatch.delenv("PKEXEC_UID", raising=False)
    return pwd.getpwnam("nobody")


def test_a_symlinked_settings_dir_is_neither_chowned_nor_chmodded(
    tmp_path: Path, as_sudo_from_nobody: pwd.struct_passwd
) -> None:
    target = tmp_path / "etc-like"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".fluxify").symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        save_settings(STORED, home / ".fluxify" / "config.json")
    info = target.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o755)
    assert list(target.iterdir()) == []


def test_a_symlinked_settings_file_is_replaced_not_followed(
    tmp_path: Path, as_sudo_from_nobody: pwd.struct_passwd
) -> None:
    victim = tmp_path / "shadow"
    victim.write_text("root:x:0:0\n")
    os.chmod(victim, 0o640)
    directory = tmp_path / "home" / ".fluxify"
    directory.mkdir(parents=True)
    (directory / "config.json").symlink_to(victim)
    path = save_settings(STORED, directory / "config.json")
    assert victim.read_text() == "root:x:0:0\n"
    info = victim.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o640)
    assert not path.is_symlink() and load_settings(path) == STORED
    assert path.stat().st_uid == as_sudo_from_nobody.pw_uid
    assert [p.name for p in directory.iterdir()] == ["config.json"]


def test_a_settings_dir_of_a_third_user_is_refused(
    tmp_path: Path, as_sudo_from_nobody: pwd.struct_passwd
) -> None:
    other = next(e for e in pwd.getpwall() if e.pw_uid not in {0, as_sudo_from_nobody.pw_uid})
    directory = tmp_path / "home" / ".fluxify"
    directory.mkdir(parents=True)
    os.chown(directory, other.pw_uid, -1)
    with pytest.raises(ConfigError, match=f"belongs to uid {other.pw_uid}"):
        save_settings(STORED, directory / "config.json")
    assert directory.stat().st_uid == other.pw_uid
