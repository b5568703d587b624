"""Coalescing TCP segments: a run, finished the way the kernel finishes a NEEDS_CSUM packet and
split again, gives back exactly the segments it was made of; anything that Linux GRO would not
merge (another flow, a gap, other flags, a short segment in the middle) stays apart; order and
bytes are kept."""

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.protocol.checksum import complete_checksum
from fluxify.protocol.tcp_coalesce import MAX_RUN_SEGMENTS, TcpRun, coalesce
from fluxify.protocol.tcp_segment import TCP_PSH, split_tso
from tests.protocol.test_tcp_segment import ACK, ipv4_packet, ipv6_packet

MSS = 1348


def segments(payload_size: int, *, v6: bool = False, flags: int = ACK | TCP_PSH) -> list[bytes]:
    payload = os.urandom(payload_size)
    packet = ipv6_packet(payload, flags) if v6 else ipv4_packet(payload, flags)
    split = split_tso(packet, 40 if v6 else 20, MSS)
    assert split is not None
    return split


def resplit(run: TcpRun) -> list[bytes]:
    """What the stack sees of a coalesced write: the super-packet with its checksum finished."""
    packet = bytearray(run.header + b"".join(bytes(p) for p in run.payloads))
    assert complete_checksum(packet, run.l4_offset, 16)
    again = split_tso(bytes(packet), run.l4_offset, run.segment_size)
    assert again is not None
    return again


def flatten(items: list[bytes | TcpRun]) -> list[bytes]:
    out: list[bytes] = []
    for item in items:
        out += resplit(item) if isinstance(item, TcpRun) else [item]
    return out


@settings(max_examples=60, deadline=None)
@given(payload_size=st.integers(min_value=2 * MSS + 1, max_value=60000), v6=st.booleans())
def test_a_run_finished_and_split_again_is_the_segments_it_joined(
    payload_size: int, v6: bool
) -> None:
    original = segments(payload_size, v6=v6)
    items = coalesce(original)
    assert len(items) == 1
    run = items[0]
    assert isinstance(run, TcpRun)
    assert run.segment_size == MSS
    assert run.ipv6 == v6
    assert resplit(run) == original


def test_another_flow_a_gap_or_a_short_segment_ends_a_run() -> None:
    a = segments(10 * MSS)
    b = segments(3 * MSS, v6=True)
    interleaved = a[:4] + b + a[4:]
    items = coalesce(interleaved)
    assert [len(i.payloads) if isinstance(i, TcpRun) else 1 for i in items] == [4, 3, 6]
    assert flatten(items) == interleaved
    gap = a[:3] + a[4:]
    assert [len(i.payloads) for i in coalesce(gap) if isinstance(i, TcpRun)] == [3, 6]
    short_first = segments(MSS // 2 + 3 * MSS)  # 3 full segments, then a short one
    assert len(coalesce(short_first)) == 1
    short_inside = short_first[-1:] + a  # a short segment cannot be followed by another flow
    assert flatten(coalesce(short_inside)) == short_inside


def test_what_is_not_a_plain_ack_segment_passes_through_unchanged() -> None:
    syn = bytearray(segments(100)[0])
    syn[33] = 0x02
    udp = bytearray(segments(100)[0])
    udp[9] = 17
    odd = [bytes(syn), bytes(udp), b"\x45" + bytes(30), b""]
    items = coalesce(odd)
    assert items == odd


def test_a_run_stops_at_64_segments_and_at_64_kib() -> None:
    tiny = split_tso(ipv4_packet(os.urandom(100 * 100), ACK), 20, 100)
    assert tiny is not None
    runs = coalesce(tiny)
    assert [len(r.payloads) for r in runs if isinstance(r, TcpRun)] == [MAX_RUN_SEGMENTS, 36]
    # Two super-packets of one stream, twice 42 000 bytes in segments of 1400 (IDs continue).
    first = ipv4_packet(os.urandom(42_000), ACK)
    second = bytearray(ipv4_packet(os.urandom(42_000), ACK))
    struct.pack_into(">I", second, 24, (0xFFFF_FF00 + 42_000) & 0xFFFF_FFFF)
    struct.pack_into(">H", second, 4, (0xFFFE + 30) & 0xFFFF)
    stream = (split_tso(first, 20, 1400) or []) + (split_tso(bytes(second), 20, 1400) or [])
    assert len(stream) == 60
    runs = coalesce(stream)
    assert [len(r.payloads) for r in runs if isinstance(r, TcpRun)] == [46, 14]  # 46 of 1400 fit
    for run in runs:
        assert isinstance(run, TcpRun)
        assert len(run.header) + sum(len(p) for p in run.payloads) <= 65535
    assert flatten(runs) == stream
