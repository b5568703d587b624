"""The revocation list file: round trip, which certificates a client revokes, corrupt files."""

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fluxify.errors import PkiError
from fluxify.pki.authority import ensure_server_pki, issue_client
from fluxify.pki.certs import load_cert
from fluxify.pki.files import ServerPkiLayout
from fluxify.pki.revocation import (
    RevocationWatcher,
    is_client_revoked,
    load_entries,
    load_revoked,
    revoke_client,
    revoked_names,
    revoked_path,
)


def serial_of(path: Path) -> int:
    return load_cert(path.read_bytes(), str(path)).serial_number


def make_layout(root: Path) -> ServerPkiLayout:
    return ensure_server_pki(root, None).layout


def test_no_file_means_nothing_revoked(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "pki")
    assert load_revoked(layout) == frozenset()
    assert not is_client_revoked(layout, "alice")


def test_revoking_a_client_lists_its_certificates_and_round_trips(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "pki")
    first = issue_client(layout, "alice", now=datetime(2026, 1, 1, tzinfo=UTC))
    second = issue_client(
        layout, "alice", reissue=True
    )  # a reissue: two dated files and the canonical one
    other = issue_client(layout, "alice-2")
    added = revoke_client(layout, "alice", now=datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC))
    serials = {serial_of(first.dated_cert), serial_of(second.dated_cert)}
    assert {e.serial for e in added} == serials == set(load_revoked(layout))
    assert serial_of(second.cert) in serials
    assert serial_of(other.cert) not in load_revoked(layout)
    assert revoked_names(layout) == {"alice"}
    assert load_entries(layout)[0].revoked_at == "2026-02-03T04:05:06+00:00"
    assert stat.S_IMODE(revoked_path(layout).stat().st_mode) == 0o600
    assert is_client_revoked(layout, "alice") and not is_client_revoked(layout, "alice-2")
    assert revoke_client(layout, "alice") == []  # already there: nothing added
    issue_client(layout, "alice", reissue=True)  # a new certificate is not revoked
    assert not is_client_revoked(layout, "alice")


def test_revoking_an_unknown_client_says_so(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "pki")
    with pytest.raises(PkiError, match="no certificate"):
        revoke_client(layout, "nobody")


@pytest.mark.parametrize("text", ["{not json", '{"revoked": [{"serial": "zz"}]}', "[]"])
def test_a_corrupt_list_is_a_pki_error_with_a_sentence(tmp_path: Path, text: str) -> None:
    layout = make_layout(tmp_path / "pki")
    revoked_path(layout).write_text(text)
    with pytest.raises(PkiError, match=r"revocation list .* is corrupt"):
        load_revoked(layout)


def test_the_watcher_rereads_on_change_and_keeps_the_last_good_set(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "pki")
    issued = issue_client(layout, "bob")
    watcher = RevocationWatcher(layout)
    assert not watcher.is_revoked(serial_of(issued.cert)) and watcher.generation == 0
    revoke_client(layout, "bob")
    assert watcher.is_revoked(serial_of(issued.cert)) and watcher.generation == 1
    assert not watcher.refresh()
    revoked_path(layout).write_text("garbage")
    assert not watcher.refresh()
    assert watcher.is_revoked(serial_of(issued.cert))
