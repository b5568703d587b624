"""Feature csum-partial in the server's data plane, in process, its TUN a pipe (no vnet header):
the TUN reader is told per destination session whether partial checksums may go there, and a
session that negotiated the feature gets its partial TCP checksums finished before a plain TUN
write; one that did not has its packets written as they came."""

import os
import socket
from collections.abc import Iterator

import pytest

from fluxify.protocol.checksum import complete_checksum
from fluxify.protocol.session import DataSession
from fluxify.protocol.tcp_segment import partial_tcp, split_tso
from fluxify.server.dataplane import ServerDataPlane
from fluxify.server.udp_socket import open_data_socket
from tests.protocol.test_tcp_segment import ACK, ipv4_packet
from tests.server.test_flood_session_budget import INNER_A, INNER_B, KEY_A, KEY_B, SID_A, SID_B


@pytest.fixture
def plane() -> Iterator[tuple[ServerDataPlane, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    sock = open_data_socket(0, "::")
    dp = ServerDataPlane(write_end, sock)
    dp.install(SID_A, KEY_A, "a", INNER_A, None, csum_partial=True)
    dp.install(SID_B, KEY_B, "b", INNER_B, None)
    try:
        yield dp, read_end
    finally:
        sock.close()
        os.close(read_end)
        os.close(write_end)


def partial_segment(source: bytes, destination: bytes = bytes([203, 0, 113, 9])) -> bytes:
    """A 1000-byte-payload TCP segment from ``source`` with a partial checksum."""
    packet = bytearray(ipv4_packet(bytes(range(250)) * 4, ACK))
    packet[12:16], packet[16:20] = source, destination
    (segment,) = split_tso(bytes(packet), 20, 1400, partial=True) or []
    assert partial_tcp(segment) == 20
    return segment


def test_the_reader_asks_for_the_destination_session(plane: tuple[ServerDataPlane, int]) -> None:
    dp, _tun = plane
    partial_for = dp.tun_reader.partial_for
    assert partial_for is not None
    server_side = bytes([10, 8, 0, 1])
    assert partial_for(partial_segment(server_side, INNER_A.packed))
    assert not partial_for(partial_segment(server_side, INNER_B.packed))  # no csum-partial
    assert not partial_for(partial_segment(server_side, bytes([10, 8, 0, 9])))  # no session
    dp.remove(SID_A)
    assert not partial_for(partial_segment(server_side, INNER_A.packed))


def test_a_plain_tun_gets_finished_checksums_only_for_the_sessions_that_sent_partial(
    plane: tuple[ServerDataPlane, int],
) -> None:
    dp, tun = plane
    port = dp.sock.getsockname()[1]
    for sid, key, inner in ((SID_A, KEY_A, INNER_A), (SID_B, KEY_B, INNER_B)):
        segment = partial_segment(inner.packed)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            datagram = DataSession(sid, key).seal_ip(segment)
            assert datagram is not None
            client.sendto(datagram, ("127.0.0.1", port))
        while not dp.on_datagrams():  # wait for the datagram
            pass
        written = os.read(tun, 65536)
        if sid == SID_A:
            finished = bytearray(segment)
            assert complete_checksum(finished, 20, 16)
            assert written == bytes(finished) != segment
        else:
            assert written == segment  # not negotiated: nothing is touched
