"""State files: whole, 0600, through a fresh ``mkstemp`` name; the state directory 0700."""

import os
import stat
from pathlib import Path

import pytest

from fluxify.linux.statefiles import ensure_private_dir, write_private_json


def test_a_private_json_file_is_0600_and_replaces_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private_json(path, {"a": 1})
    assert path.read_text() == '{"a": 1}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_a_planted_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / "stats.json").symlink_to(victim)
    (tmp_path / "stats.tmp").symlink_to(victim)
    write_private_json(tmp_path / "stats.json", [1])
    assert victim.read_text() == "untouched"
    assert not (tmp_path / "stats.json").is_symlink()


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_private_json(tmp_path / "stats.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_the_state_dir_is_made_0700(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    ensure_private_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    fresh = tmp_path / "a" / "b"
    ensure_private_dir(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
