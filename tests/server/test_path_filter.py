"""The server keeps the kernel's confirmed-path set in step with its sessions (issue 13).

The real ``ServerDataPlane`` (its TUN a pipe) and ``PathFilter`` with the server's nftables
table in a throwaway namespace, the data socket and a client's socket inside it: a path the
engine confirms goes into the set and is then let through unlimited; when the session ends it
leaves the set and the kernel limits it like any stranger. Without nft, or when nft fails,
the filter gets out of the way.
"""

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from fluxify.errors import HostError
from fluxify.linux import nftables
from fluxify.linux.netns import NetnsThread
from fluxify.protocol.session import DataSession
from fluxify.server.app import BondingServer
from fluxify.server.config import ServerConfig
from fluxify.server.dataplane import ServerDataPlane
from fluxify.server.path_filter import PathFilter, set_element
from fluxify.server.udp_socket import open_data_socket
from tests.linux.conftest import needs_root, throwaway_netns

KEY = bytes(range(32))
SID = 0x0A0A_0001
INNER = IPv4Address("10.8.0.2")
TUN = "fxtun0"
BURST_OVER = 400  # datagrams sent at once: well beyond the kernel's burst of 100 per source
WAIT_S = 10.0


def ipv4(number: int) -> bytes:
    body = number.to_bytes(4, "big") + bytes(36)
    header = bytes([0x45, 0, 0, 60]) + bytes(4) + bytes([64, 17, 0, 0])
    return header + INNER.packed + bytes([10, 8, 0, 1]) + body


async def wait_for(what: str, condition: Callable[[], bool | Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT_S} s for {what}")
        await asyncio.sleep(0.01)


def kernel_paths(netns: str) -> str:
    return nftables.run_nft(["list", "set", "inet", nftables.TABLE, "data_paths4"], netns=netns)


@pytest.fixture
def netns() -> Iterator[str]:
    with throwaway_netns("fxf") as name:
        yield name


@needs_root
async def test_a_confirmed_path_enters_the_set_and_leaves_it_with_its_session(
    netns: str,
) -> None:
    with NetnsThread(netns) as inside:
        sock = inside.call(open_data_socket, 0, "::")
        client = inside.call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    port = sock.getsockname()[1]
    flood = nftables.FloodFilter(udp_port=port, control_port=8443, except_ifname=TUN)
    nftables.apply(nftables.render(nftables.server_ruleset(TUN, flood_filter=flood)), netns)

    def confirmed() -> list[tuple[str, int, int, int]]:
        return dp.confirmed_paths()

    # no periodic look: the data plane's word alone must bring each change
    path_filter = PathFilter(confirmed, netns=netns, counter_interval_s=3600.0)
    dp = ServerDataPlane(write_end, sock, on_paths_changed=path_filter.changed)
    worker = asyncio.create_task(path_filter.run())
    codec = DataSession(SID, KEY)
    sent = 0

    def send(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            sent += 1
            datagram = codec.seal_ip(ipv4(sent))
            assert datagram is not None
            client.sendto(datagram, ("127.0.0.1", port))

    def drain() -> int:
        read = 0
        while step := dp.on_datagrams():
            read += step
        return read

    try:
        client.bind(("127.0.0.1", 0))
        element = f"127.0.0.1 . {client.getsockname()[1]}"
        await wait_for("the sets emptied at start", lambda: path_filter.syncs == 1)
        dp.install(SID, KEY, "alice", INNER, None)
        send(1)
        assert drain() == 1  # an IP packet: the path is confirmed at once
        path = ("127.0.0.1", client.getsockname()[1])  # not v4-mapped
        await wait_for("the path applied", lambda: path_filter.applied == {path})
        assert element in kernel_paths(netns)

        send(BURST_OVER)  # a confirmed path: no limit
        received = 0

        def all_read() -> bool:
            nonlocal received
            received += drain()
            return received == BURST_OVER

        await wait_for("every datagram of the confirmed path", all_read)

        dp.remove(SID)  # the session ends
        await wait_for("the path removed", lambda: not path_filter.applied)
        assert element not in kernel_paths(netns)
        send(BURST_OVER)  # now a stranger: the kernel keeps all but its burst
        over = 0

        def counted() -> bool:
            nonlocal over, received
            received += drain()
            over = nftables.read_counters(netns=netns)[nftables.DATA_OVER_SOURCE]
            return received + over == 2 * BURST_OVER

        await wait_for("the stranger's datagrams read or counted", counted)
        assert 0 < over < BURST_OVER
        # one nft run to empty the sets, one with the path, one without: none per datagram
        assert path_filter.syncs == 3
    finally:
        worker.cancel()
        for closing in (sock, client):
            closing.close()
        os.close(read_end)
        os.close(write_end)


def test_a_socket_address_becomes_its_set_element() -> None:
    assert set_element(("::ffff:192.0.2.7", 4000, 0, 0)) == ("192.0.2.7", 4000)
    assert set_element(("2001:db8::1", 5000, 0, 0)) == ("2001:db8::1", 5000)
    assert set_element(("fe80::1%eth0", 5000, 0, 2)) == ("fe80::1", 5000)


async def test_when_nft_fails_the_filter_empties_its_chains_says_so_once_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scripts: list[str] = []

    def apply(script: str) -> None:
        scripts.append(script)
        if "add element" in script:
            raise HostError("nft -f - failed: Could not process rule")

    paths = [("::ffff:192.0.2.7", 4000, 0, 0)]
    path_filter = PathFilter(lambda: paths, apply=apply, read_counters=dict)
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(path_filter.run(), WAIT_S)  # returns: it gave up
    assert not path_filter.enabled
    assert scripts[-1] == nftables.render_filter_off()
    assert [r.getMessage() for r in caplog.records] == [
        "kernel flood filter off (nft -f - failed: Could not process rule); "
        "the server goes on with its own checks alone"
    ]
    path_filter.changed()  # the data plane goes on calling it: harmless


def test_a_server_whose_nft_refuses_the_filter_keeps_its_nat_without_it(tmp_path: Path) -> None:
    applied: list[nftables.Ruleset] = []

    class Journal:
        def apply_nftables(self, ruleset: nftables.Ruleset) -> None:
            if ruleset.flood_filter is not None:
                raise HostError("nft -f - failed: unknown expression fib")
            applied.append(ruleset)

    server = BondingServer(ServerConfig(pki_dir=tmp_path / "pki"), tmp_path / "state")
    server._apply_nftables(Journal(), "tun0")  # type: ignore[arg-type]
    assert applied == [nftables.server_ruleset("tun0")]  # NAT, forwarding, clamp: no filter
    assert not server._kernel_filter  # so no set is kept in step either
