"""The client data plane hands the engine its uplinks' datagrams in the kernel's arrival order:
the server sends runs of packets per path, and reading one socket while the other waits would
give the engine a later run first, to be held in the reorder buffer for the earlier one.
Loopback UDP sockets, no namespace; the engine's clock is the event loop's."""

import asyncio
import itertools
import os
import socket
import time

import pytest

from fluxify.client.dataplane import ClientDataPlane, Tunnel, Uplink
from fluxify.linux import rx_timestamps
from fluxify.protocol.bond import BondConfig, BondEngine, Role
from fluxify.protocol.header import HeaderFlag, path_word
from fluxify.protocol.session import DataSession
from tests.protocol.netsim import KEY, SESSION_ID, udp_packet

RUN = 10


def _until_the_kernel_stamps_arrivals(server: socket.socket, sock: socket.socket) -> None:
    """Wait until ``sock``'s datagrams are stamped when they arrive, not when they are read.

    Enabling timestamps on the machine's first such socket turns the kernel's stamping on from
    a work queue, later; until then each datagram is stamped as it is read, so reading wan1
    before wan2 would put 21-30 before 11-20 (seen in CI: 10 held; 1 in 300 fresh sockets
    here). A probe is stamped at arrival when its stamp precedes a clock reading taken after
    the send and before the read."""
    for _ in range(1000):  # ~2 ms a try: bounded at a few seconds even on a loaded box
        server.sendto(b"probe", sock.getsockname())
        sent = time.time()
        time.sleep(0.001)
        try:
            _data, ancdata, _flags, _address = sock.recvmsg(64, rx_timestamps.TIMESTAMP_SPACE)
        except BlockingIOError:
            continue
        stamp = rx_timestamps.arrival(ancdata, 0.0)
        if stamp is not None and stamp <= sent:
            while True:  # leave nothing for the data plane but the runs
                try:
                    sock.recv(64)
                except BlockingIOError:
                    return
    raise AssertionError("the kernel never stamped a datagram on arrival")


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def _held_after_three_runs() -> tuple[int, int]:
    """Runs 1-10 on wan1, 11-20 on wan2, 21-30 on wan1, then wan1's socket reported readable:
    (packets the engine held, packets written to the TUN)."""
    loop = asyncio.get_running_loop()
    server = _udp()
    uplinks = [Uplink(f"wan{i}", _udp()) for i in (1, 2)]
    for uplink in uplinks:
        assert rx_timestamps.enable(uplink.sock)
    null = os.open(os.devnull, os.O_WRONLY)
    now = loop.time()
    engine: BondEngine[int] = BondEngine(
        DataSession(SESSION_ID, KEY, numbered_control=True), BondConfig(Role.CLIENT, True), now
    )
    for index, uplink in enumerate(uplinks):
        engine.add_path(index, uplink.label, now)
    tunnel = Tunnel(engine, server.getsockname(), bytes(4), bytes(16))
    dp = ClientDataPlane(null, uplinks, tunnel)
    sender = DataSession(SESSION_ID, KEY, numbered_control=True)
    try:
        for uplink in uplinks:
            _until_the_kernel_stamps_arrivals(server, uplink.sock)
        send_us = int(loop.time() * 1e6) & 0xFFFF_FFFF
        for run, index in enumerate((0, 1, 0)):
            for n in range(RUN):
                number = run * RUN + n
                datagram = sender.seal_ip(
                    udp_packet(number, down=True),
                    int(HeaderFlag.PATH_FIELDS),
                    path_word(9 + index, number + 1),
                    send_us,
                )
                assert datagram is not None
                server.sendto(datagram, uplinks[index].sock.getsockname())
        dp.on_datagrams(0)
        return engine.reorder.reordered, dp.tun.written
    finally:
        for sock in (server, *(u.sock for u in uplinks)):
            sock.close()
        os.close(null)


def test_the_engine_gets_both_uplinks_datagrams_in_arrival_order() -> None:
    held, written = asyncio.run(_held_after_three_runs())
    assert written == 3 * RUN
    assert held == 0  # reading wan1 alone first: 21-30 held for 11-20 (10)


def test_the_order_holds_when_the_clock_offset_moves_between_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each reading of wall-minus-monotonic may differ by a preemption between its two clock
    calls (on a loaded box: milliseconds, more than between two runs); one reading per call."""
    offsets = itertools.count(start=0.0, step=0.001)
    monkeypatch.setattr(rx_timestamps, "wall_minus_monotonic", lambda: next(offsets))
    held, written = asyncio.run(_held_after_three_runs())
    assert written == 3 * RUN
    assert held == 0
