"""An unloaded ping waits for nothing in the bond engines: each end hands the echo on the moment
its first copy arrives, whichever path is faster, whatever the slower copy does, from the first
ping after connecting on: no reorder hold, no timer. What the lab measures on top of the raw
RTT is the cost of the two processes themselves (docs/latency.md)."""

import struct

import pytest

from fluxify.protocol.drops import DropReason
from tests.protocol.netsim import CLIENT_V4, SERVER_V4, LinkModel, Network

SLACK_S = 0.0005  # serialisation of one small datagram at 1 Gbit/s is ~1 µs; a hold is >= 5 ms


def echo(sequence: int, *, reply: bool = False) -> bytes:
    """An ICMP echo request from the client's inner address (a reply to it when ``reply``)."""
    icmp = struct.pack(">BBHHH", 0 if reply else 8, 0, 0, 7, sequence) + bytes(56)
    src, dst = (SERVER_V4, CLIENT_V4) if reply else (CLIENT_V4, SERVER_V4)
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, src, dst)
    return header + icmp


@pytest.mark.parametrize("delays_ms", [(0.05, 0.05), (10.0, 30.0), (30.0, 10.0)])
def test_an_unloaded_ping_is_handed_on_when_its_first_copy_arrives(
    delays_ms: tuple[float, float],
) -> None:
    net = Network([LinkModel(1000.0, d) for d in delays_ms])
    fastest_s = min(delays_ms) / 1000
    net.run_until(0.5)
    pings = 20
    for sequence in range(pings):  # one every 200 ms, as the lab's latency bench
        start = net.now
        request, reply = echo(sequence), echo(sequence, reply=True)
        net.send("client", [request])
        net.run_until(start + fastest_s + SLACK_S)
        assert net.delivered["server"][-1:] == [request], f"request {sequence} held"
        net.send("server", [reply])
        net.run_until(start + 2 * (fastest_s + SLACK_S))
        assert net.delivered["client"][-1:] == [reply], f"reply {sequence} held"
        net.run_until(start + 0.2)
    # each went on both paths, and the second copies were dropped as such
    assert net.server.codec.drops[DropReason.DUPLICATE] == pings
    assert net.client.codec.drops[DropReason.DUPLICATE] == pings
