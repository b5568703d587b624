"""One client flooding the server's socket with valid traffic cannot take the others' share,
and a batch from an address that is no path gets no more decryptions than its budget.

In process over loopback UDP: the real ``ServerDataPlane`` with two sessions, its TUN a pipe.
"""

import os
import socket
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest

from fluxify.protocol.bond import UNKNOWN_SOURCE_BURST
from fluxify.protocol.drops import DropReason
from fluxify.protocol.seal import Sealer
from fluxify.protocol.session import DataSession
from fluxify.server.dataplane import DRAIN_BUDGET, ServerDataPlane
from fluxify.server.udp_socket import open_data_socket

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))
SID_A, SID_B = 0x0A0A_0001, 0x0B0B_0002
INNER_A, INNER_B = IPv4Address("10.8.0.2"), IPv4Address("10.8.0.3")


def ipv4(src: IPv4Address, number: int) -> bytes:
    body = number.to_bytes(4, "big") + bytes(36)
    header = bytes([0x45, 0, 0, 60]) + bytes(4) + bytes([64, 17, 0, 0])
    return header + src.packed + bytes([10, 8, 0, 1]) + body


class Client:
    def __init__(self, sid: int, key: bytes, inner: IPv4Address, port: int) -> None:
        self.codec = DataSession(sid, key)
        self.inner = inner
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = port
        self.sent = 0

    def send(self, count: int) -> None:
        for _ in range(count):
            self.sent += 1
            datagram = self.codec.seal_ip(ipv4(self.inner, self.sent))
            assert datagram is not None
            self.sock.sendto(datagram, ("127.0.0.1", self.port))


@pytest.fixture
def plane() -> Iterator[tuple[ServerDataPlane, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    sock = open_data_socket(0, "::")
    dp = ServerDataPlane(write_end, sock)
    dp.install(SID_A, KEY_A, "a", INNER_A, None)
    dp.install(SID_B, KEY_B, "b", INNER_B, None)
    try:
        yield dp, read_end
    finally:
        sock.close()
        os.close(read_end)
        os.close(write_end)


def sources_on_tun(read_end: int) -> list[bytes]:
    """The inner source address of every packet written to the TUN (a pipe: 60 bytes each)."""
    data = b""
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except BlockingIOError:
            break
        data += chunk
    return [data[i + 12 : i + 16] for i in range(0, len(data), 60)]


def test_a_client_flooding_valid_traffic_leaves_the_other_its_datagrams(
    plane: tuple[ServerDataPlane, int],
) -> None:
    dp, tun = plane
    port = dp.sock.getsockname()[1]
    flooder, quiet = Client(SID_A, KEY_A, INNER_A, port), Client(SID_B, KEY_B, INNER_B, port)
    flooder.send(1)
    quiet.send(1)
    while dp.on_datagrams():  # both paths learnt
        pass
    sources_on_tun(tun)
    flooder.send(100)
    quiet.send(8)
    flooder.send(300)
    read = dp.on_datagrams()
    assert read == DRAIN_BUDGET
    delivered = sources_on_tun(tun)
    # the quiet client's 8 all went through; the flooder kept half of the read, no more
    assert delivered.count(INNER_B.packed) == 8
    share = DRAIN_BUDGET // 2
    assert delivered.count(INNER_A.packed) == share
    assert dp.drops[DropReason.SESSION_BUDGET] == DRAIN_BUDGET - 8 - share
    while dp.on_datagrams():  # the rest of the flood, alone in its reads: nothing more dropped
        pass
    assert dp.drops[DropReason.SESSION_BUDGET] == DRAIN_BUDGET - 8 - share
    assert dp.drops[DropReason.BAD_TAG] == dp.drops[DropReason.REPLAY] == 0


def test_one_session_alone_keeps_its_whole_read(plane: tuple[ServerDataPlane, int]) -> None:
    dp, tun = plane
    flooder = Client(SID_A, KEY_A, INNER_A, dp.sock.getsockname()[1])
    flooder.send(DRAIN_BUDGET + 50)
    total = 0
    while read := dp.on_datagrams():
        total += read
    assert total == DRAIN_BUDGET + 50
    assert sources_on_tun(tun).count(INNER_A.packed) == DRAIN_BUDGET + 50
    assert dp.drops[DropReason.SESSION_BUDGET] == 0


def test_a_batch_from_an_unknown_address_gets_one_decryption_per_token_not_per_batch(
    plane: tuple[ServerDataPlane, int],
) -> None:
    """One read of many forged datagrams once cost one token and a decryption for each."""
    dp, _tun = plane
    port = dp.sock.getsockname()[1]
    client = Client(SID_A, KEY_A, INNER_A, port)
    client.send(1)
    dp.on_datagrams()
    forger = Sealer(bytes(32), SID_A)  # the session's id, fresh numbers, the wrong key
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder:
        for seq in range(100, 300):
            flooder.sendto(forger.seal(1, seq, 0, ipv4(INNER_A, seq)), ("127.0.0.1", port))
        read = 0
        while step := dp.on_datagrams():
            read += step
    assert read == 200
    tried = dp.drops[DropReason.BAD_TAG]
    assert 0 < tried <= UNKNOWN_SOURCE_BURST + 1
    assert tried + dp.drops[DropReason.UNKNOWN_SOURCE_BUDGET] == 200
