"""The journal runs as root and trusts only what it wrote: owner, modes, shape, allow-lists."""

import json
import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluxify.client.lbuplinks import HASH_POLICY_SYSCTL
from fluxify.errors import HostError
from fluxify.linux import journal as journal_module
from fluxify.linux import nftables, sysctl
from fluxify.linux.journal import Journal, journal_problem, own_sysctl
from fluxify.server.app import FORWARDING_SYSCTLS
from tests.linux.conftest import ip, requires_root

OWNER = "client"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")


@pytest.fixture
def replayed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Sysctl and nft writes recorded instead of done (and reads answering "0")."""
    calls: list[tuple[str, ...]] = []

    def write(name: str, value: str, netns: str | None = None) -> None:
        calls.append(("sysctl", name, value))

    def apply(script: str, netns: str | None = None) -> None:
        calls.append(("nft", script))

    monkeypatch.setattr(sysctl, "write_sysctl", write)
    monkeypatch.setattr(sysctl, "read_sysctl", lambda name, netns=None: "0")
    monkeypatch.setattr(nftables, "apply", apply)
    monkeypatch.setattr(nftables, "delete_table", lambda table, netns=None: apply(table))
    return calls


def leave(state: Path, body: object) -> Path:
    path = state / f"{OWNER}.json"
    path.write_text(json.dumps(body))
    os.chmod(path, 0o600)
    return path


SYSCTL_RECORD = {"kind": "sysctl", "name": "net.ipv4.ip_forward", "value": "0"}


def test_a_journal_it_wrote_is_repaired(tmp_path: Path, replayed: list[tuple[str, ...]]) -> None:
    leave(tmp_path, {"version": 1, "owner": OWNER, "netns": None, "inverses": [SYSCTL_RECORD]})
    with Journal(OWNER, state_dir=tmp_path) as journal:
        assert journal.repair() == 1
    assert replayed == [("sysctl", "net.ipv4.ip_forward", "0")]


@needs_root
def test_a_journal_owned_by_someone_else_is_not_replayed(
    tmp_path: Path, replayed: list[tuple[str, ...]]
) -> None:
    path = leave(tmp_path, {"inverses": [SYSCTL_RECORD]})
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    with (
        Journal(OWNER, state_dir=tmp_path) as journal,
        pytest.raises(HostError, match=f"journal {path} is owned by uid"),
    ):
        journal.repair()
    assert replayed == []


def test_a_group_writable_journal_is_not_replayed(
    tmp_path: Path, replayed: list[tuple[str, ...]]
) -> None:
    path = leave(tmp_path, {"inverses": [SYSCTL_RECORD]})
    os.chmod(path, 0o664)
    with (
        Journal(OWNER, state_dir=tmp_path) as journal,
        pytest.raises(HostError, match="writable by other users"),
    ):
        journal.repair()
    assert replayed == []


def test_a_symlinked_journal_is_not_followed(
    tmp_path: Path, replayed: list[tuple[str, ...]]
) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"inverses": [SYSCTL_RECORD]}))
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / f"{OWNER}.json").symlink_to(elsewhere)
    with Journal(OWNER, state_dir=state) as journal, pytest.raises(HostError, match="symbolic"):
        journal.repair()
    assert replayed == []


@needs_root
def test_a_state_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(HostError, match=f"state directory {state} is owned by uid .* chown"):
        Journal(OWNER, state_dir=state)


def test_a_world_writable_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o777)
    with pytest.raises(HostError, match=r"writable by other users .*chmod 700"):
        Journal(OWNER, state_dir=state)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "JSON list, not an object"),
        ({"inverses": "x"}, '"inverses" is not a list'),
        ({"inverses": [{}]}, "record 1: unknown kind None"),
        ({"inverses": [{"kind": "sysctl", "name": "net.ipv4.ip_forward"}]}, "valid 'value'"),
        ({"inverses": [{"kind": "route", "action": "delete", "route": {}}]}, "does not parse"),
        (
            {"inverses": [{"kind": "link", "ifname": "x", "up": True, "mtu": True}]},
            "valid 'mtu'",
        ),
        ({"inverses": [SYSCTL_RECORD], "netns": "../../etc"}, "not a namespace name"),
        (
            {"inverses": [{"kind": "sysctl", "name": "kernel.core_pattern", "value": "|/x"}]},
            "'kernel.core_pattern' is not a kernel parameter Fluxify changes",
        ),
        (
            {"inverses": [{"kind": "nftables", "table": "filter", "restore": None}]},
            "table 'filter' is not Fluxify's",
        ),
    ],
    ids=[
        "list",
        "inverses-string",
        "empty-record",
        "sysctl-without-value",
        "bad-route",
        "bool-mtu",
        "netns-path",
        "core-pattern",
        "foreign-table",
    ],
)
def test_a_journal_of_the_wrong_shape_is_a_host_error_naming_the_file(
    tmp_path: Path, replayed: list[tuple[str, ...]], body: object, problem: str
) -> None:
    path = leave(tmp_path, body)
    with Journal(OWNER, state_dir=tmp_path) as journal:
        with pytest.raises(HostError) as raised:
            journal.repair()
        message = str(raised.value)
    assert str(path) in message and problem in message and "delete it" in message
    assert replayed == []
    assert journal_problem(body) is not None


def test_deep_json_in_the_journal_is_a_host_error(tmp_path: Path) -> None:
    path = tmp_path / f"{OWNER}.json"
    path.write_text("[" * 100_000)
    os.chmod(path, 0o600)
    with Journal(OWNER, state_dir=tmp_path) as journal, pytest.raises(HostError, match=str(path)):
        journal.repair()


def test_every_sysctl_fluxify_sets_is_allowed_and_nothing_else() -> None:
    ours = [
        *FORWARDING_SYSCTLS,
        *HASH_POLICY_SYSCTL.values(),
        sysctl.rp_filter_name("eth0"),
        sysctl.rp_filter_name("eth0.100"),
        "net.ipv4.conf.wan0.rp_filter",
        "net.ipv4.conf.eth0/100.rp_filter",
    ]
    assert all(own_sysctl(name) for name in ours)
    for foreign in (
        "kernel.core_pattern",
        "kernel/core_pattern",
        "net.ipv4.conf.all.accept_redirects",
        "net/ipv4/conf/eth0/../../../kernel/core_pattern",
        "net.ipv4.conf.eth0.100.rp_filter",  # eth0/100: not an interface parameter
    ):
        assert not own_sysctl(foreign), foreign


def test_changes_outside_the_allow_lists_are_refused(
    tmp_path: Path, replayed: list[tuple[str, ...]]
) -> None:
    with Journal(OWNER, state_dir=tmp_path) as journal:
        with pytest.raises(HostError, match="not a kernel parameter Fluxify changes"):
            journal.set_sysctl("kernel.core_pattern", "core")
        with pytest.raises(HostError, match="not Fluxify's"):
            journal.apply_nftables(nftables.Ruleset(table="filter"))
        assert journal.pending == []
    assert replayed == []


def test_the_journal_is_written_through_a_fresh_name_never_a_planted_one(
    tmp_path: Path, replayed: list[tuple[str, ...]]
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / f"{OWNER}.tmp").symlink_to(victim)  # the old fixed temporary name
    with Journal(OWNER, state_dir=state) as journal:
        journal.set_sysctl("net.ipv4.ip_forward", "1")
        saved = state / f"{OWNER}.json"
        assert not saved.is_symlink() and json.loads(saved.read_text())["inverses"]
        assert (saved.stat().st_mode & 0o777) == 0o600
    assert victim.read_text() == "untouched"
    assert sorted(p.name for p in state.iterdir()) == [f"{OWNER}.lock", f"{OWNER}.tmp"]


def test_write_failures_leave_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.os, "fsync", full)
    with pytest.raises(HostError, match="No space left"):
        journal_module._write_atomically(tmp_path / "client.json", "{}")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def vlan_netns() -> Iterator[str]:
    """A namespace holding a link named like a VLAN, ``dum0.100`` (a veth: no vlan module here)."""
    name = f"fhv-{secrets.token_hex(3)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", "dum0.100", "type", "veth", "peer", "name", "peer0")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.root
@requires_root
def test_the_rp_filter_of_a_vlan_uplink_is_set_and_restored(
    vlan_netns: str, tmp_path: Path
) -> None:
    name = sysctl.rp_filter_name("dum0.100")
    before = sysctl.read_sysctl(name, vlan_netns)
    wanted = "2" if before != "2" else "1"
    with Journal(OWNER, netns=vlan_netns, state_dir=tmp_path) as journal:
        journal.set_sysctl(name, wanted)
        assert sysctl.read_sysctl("net.ipv4.conf.dum0/100.rp_filter", vlan_netns) == wanted
    assert sysctl.read_sysctl(name, vlan_netns) == before
