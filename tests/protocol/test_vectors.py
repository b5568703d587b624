"""The Go v1 wire vectors: datagrams sealed by Go Fluxify 39ad2de (common.EncryptPacket).

Source: the Go implementation's own vectors, copied verbatim into tests/protocol/data/go-v1.json
so the suite does not depend on the checkout's surroundings.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from fluxify.protocol.compression import inflate
from fluxify.protocol.drops import DropReason
from fluxify.protocol.header import unpack_header
from fluxify.protocol.seal import Opener
from fluxify.protocol.session import DataSession

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "go-v1.json").read_text())
KEY = bytes.fromhex(VECTORS["key_hex"])
SESSION_ID = 0xA1B2C3D4


@pytest.mark.parametrize("vector", VECTORS["accept"], ids=lambda v: v["name"])
def test_accept_vector_opens_to_the_listed_fields(vector: dict[str, Any]) -> None:
    datagram = bytes.fromhex(vector["datagram_hex"])
    header = unpack_header(datagram)
    assert header.version == vector["version"]
    assert header.type == vector["type"]
    assert header.session_id == vector["session_id"]
    assert header.seq == vector["seq"]
    assert header.length == vector["length"]
    assert header.compression == vector["reserved0"]
    plaintext = Opener(KEY).open(datagram)
    assert plaintext.hex() == vector["plaintext_hex"]
    if "inflated_hex" in vector:
        assert inflate(plaintext).hex() == vector["inflated_hex"]


@pytest.mark.parametrize("vector", VECTORS["accept"], ids=lambda v: v["name"])
def test_accept_vector_through_the_session_api(vector: dict[str, Any]) -> None:
    session = DataSession(SESSION_ID, KEY)
    opened = session.open(bytes.fromhex(vector["datagram_hex"]))
    assert opened is not None, session.drops.snapshot()
    ptype, payload = opened
    assert ptype == vector["type"]
    expected = vector.get("inflated_hex", vector["plaintext_hex"])
    assert payload.hex() == expected


REJECT_REASONS = {
    "tag_flipped": DropReason.BAD_TAG,
    "aad_seq_flipped": DropReason.BAD_TAG,
    "trailing_byte": DropReason.LENGTH_MISMATCH,
    "truncated": DropReason.TOO_SHORT,
}


def test_every_reject_vector_has_an_expected_reason() -> None:
    assert {v["name"] for v in VECTORS["reject"]} == set(REJECT_REASONS)


@pytest.mark.parametrize("vector", VECTORS["reject"], ids=lambda v: v["name"])
def test_reject_vector_is_dropped_with_the_right_reason(vector: dict[str, Any]) -> None:
    session = DataSession(SESSION_ID, KEY)
    assert session.open(bytes.fromhex(vector["datagram_hex"])) is None
    assert session.drops.snapshot() == {REJECT_REASONS[vector["name"]].name.lower(): 1}
