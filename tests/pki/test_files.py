"""Client-name sanitizing (the original's rules plus collision refusals), PEM blocks, file modes."""

import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxify.errors import PkiError
from fluxify.pki.files import pem_blocks, sanitize_client_name, sanitized_form, write_file


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice", "alice"),
        ("  bob smith  ", "bob_smith"),
        ("a/b\\c..d", "a_b_c_d"),
        ("--_x_--", "x"),
        ("ünï-côde", "n_-c_de"),
        ("Laptop-01_x", "Laptop-01_x"),
    ],
)
def test_the_original_rules_give_the_stored_form(raw: str, expected: str) -> None:
    assert sanitized_form(raw) == expected


@pytest.mark.parametrize(
    ("raw", "stored"),
    [("ålice", "lice"), ("bob smith", "bob_smith"), ("../x", "x"), ("-rf", "rf"), ("a/b", "a_b")],
)
def test_a_name_the_rules_would_change_is_refused_with_the_form_to_use(
    raw: str, stored: str
) -> None:
    """ "ålice" once became "lice" and silently overwrote the files of a client named "lice"."""
    with pytest.raises(PkiError, match=f"stored as {stored!r}.*letters a-z, digits"):
        sanitize_client_name(raw)


def test_surrounding_whitespace_is_only_trimmed() -> None:
    assert sanitize_client_name("  Laptop-01_x \n") == "Laptop-01_x"


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "///", "ca", "server", "server-key", "alice-key", "a-20250101-120000", "x" * 65],
)
def test_sanitize_refuses_empty_and_colliding_names(raw: str) -> None:
    with pytest.raises(PkiError):
        sanitize_client_name(raw)


@given(st.text(max_size=80))
def test_sanitized_names_are_safe_file_stems_and_stable(raw: str) -> None:
    try:
        name = sanitize_client_name(raw)
    except PkiError:
        return
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_-]*[a-zA-Z0-9]|[a-zA-Z0-9]", name)
    assert sanitize_client_name(name) == name
    assert "/" not in name and ".." not in name


@given(st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9_]{0,20}[a-zA-Z0-9])?", fullmatch=True))
def test_clean_names_are_kept_as_they_are(name: str) -> None:
    assert sanitize_client_name(name) == name


def test_pem_blocks_finds_every_block_in_order() -> None:
    data = (
        b"junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\n"
        b"-----BEGIN EC PRIVATE KEY-----\r\nBBBB\r\n-----END EC PRIVATE KEY-----"
    )
    blocks = pem_blocks(data)
    assert [label for label, _ in blocks] == ["CERTIFICATE", "EC PRIVATE KEY"]
    assert blocks[1][1].endswith(b"-----END EC PRIVATE KEY-----\n")


def test_write_file_sets_the_exact_mode_even_when_replacing(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    target.write_bytes(b"old")
    target.chmod(0o666)
    write_file(target, b"new", 0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]
