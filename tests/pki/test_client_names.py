"""Distinct client names never share files: names that would change are refused, and a
reissue of an existing name happens only when asked for."""

from pathlib import Path

import pytest

from fluxify.errors import PkiError
from fluxify.pki.authority import ensure_server_pki, issue_client


def test_a_name_that_would_collapse_onto_another_is_refused_and_overwrites_nothing(
    tmp_path: Path,
) -> None:
    layout = ensure_server_pki(tmp_path, ("127.0.0.1",)).layout
    lice = issue_client(layout, "lice")
    before = {path: path.read_bytes() for path in lice.paths()}
    with pytest.raises(PkiError, match="stored as 'lice'"):
        issue_client(layout, "ålice")
    assert {path: path.read_bytes() for path in lice.paths()} == before


def test_an_existing_name_is_reissued_only_when_asked(tmp_path: Path) -> None:
    layout = ensure_server_pki(tmp_path, ("127.0.0.1",)).layout
    first = issue_client(layout, "alice", reissue=False)
    cert = first.cert.read_bytes()
    with pytest.raises(PkiError, match=r"already has a certificate.*ask for a reissue"):
        issue_client(layout, "alice", reissue=False)
    assert first.cert.read_bytes() == cert
    again = issue_client(layout, "alice", reissue=True)
    assert again.cert.read_bytes() != cert
