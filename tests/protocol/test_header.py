"""The 22-byte header codec (SPEC §2)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxify.protocol.header import (
    HEADER_SIZE,
    MIN_DATAGRAM_SIZE,
    Header,
    PacketType,
    pack_header,
    peek_session_id,
    unpack_header,
)


def test_layout_matches_the_spec_byte_for_byte() -> None:
    # SPEC §2 example: handshake of session 0xA1B2C3D4, seq 0, empty plaintext -> length 28.
    assert pack_header(PacketType.HANDSHAKE, 0xA1B2C3D4, 0, 0).hex() == (
        "0103a1b2c3d400000000001c" + "00" * 10
    )
    assert len(pack_header(1, 1, 1, 1400, 1)) == HEADER_SIZE == 22


@given(
    ptype=st.integers(0, 255),
    session_id=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**32 - 1),
    payload=st.integers(0, 65535 - 28),
    flag=st.integers(0, 255),
)
def test_pack_unpack_round_trip(
    ptype: int, session_id: int, seq: int, payload: int, flag: int
) -> None:
    header = unpack_header(pack_header(ptype, session_id, seq, payload, flag, flags=flag ^ 1))
    assert header == Header(1, ptype, session_id, seq, payload + 28, flag, flag ^ 1)


def test_reserved_bytes_2_to_9_are_zero_and_ignored_on_read() -> None:
    packed = bytearray(pack_header(1, 7, 9, 100, 1))
    assert packed[13:22] == bytes(9)  # flags 0 towards v1 peers, as Go sends
    packed[14:22] = b"\xff" * 8
    header = unpack_header(bytes(packed))
    assert (header.compression, header.flags) == (1, 0)


def test_unpack_refuses_short_input() -> None:
    with pytest.raises(ValueError, match="22 bytes"):
        unpack_header(b"\x01" * 21)


def test_peek_session_id_needs_a_whole_minimal_datagram() -> None:
    datagram = pack_header(3, 0xDEADBEEF, 0, 0) + bytes(28)
    assert len(datagram) == MIN_DATAGRAM_SIZE
    assert peek_session_id(datagram) == 0xDEADBEEF
    assert peek_session_id(datagram[:-1]) == 0
