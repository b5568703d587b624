"""Coalescing UDP datagrams: a run, finished the way the kernel finishes a NEEDS_CSUM packet and
split again as ``__udp_gso_segment`` would, gives back exactly the datagrams it was made of;
anything the segmentation could not give back (another flow, a longer datagram after a shorter
one, a fragment, too many or too many bytes) stays apart; order and bytes are kept."""

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.protocol.checksum import UDP_CHECK_OFFSET, complete_checksum
from fluxify.protocol.udp_coalesce import MAX_RUN_SEGMENTS, UdpRun, coalesce_udp
from fluxify.protocol.udp_segment import split_uso
from tests.protocol.test_udp_segment import assert_valid_datagram, super_packet

SEGMENT = 200


def datagrams(
    count: int, *, size: int = SEGMENT, last: int | None = None, v6: bool = False
) -> list[bytes]:
    """``count`` datagrams of one flow with complete checksums and consecutive IPv4 IDs, as a
    sending stack makes them; the last one ``last`` bytes long if given."""
    total = size * (count - 1) + (size if last is None else last)
    packets = split_uso(super_packet(6 if v6 else 4, os.urandom(total)), 40 if v6 else 20, size)
    assert packets is not None and len(packets) == count
    return packets


def other_port(packet: bytes) -> bytes:
    """The same datagram from another source port (another flow), checksum made valid again."""
    l4 = 20 if packet[0] >> 4 == 4 else 40
    changed = bytearray(packet)
    struct.pack_into(">H", changed, l4, 5000)
    changed[l4 + UDP_CHECK_OFFSET : l4 + UDP_CHECK_OFFSET + 2] = b"\0\0"
    pseudo = packet[12:20] if l4 == 20 else packet[8:40]
    total = sum(struct.unpack(f">{len(pseudo) // 2}H", pseudo)) + 17 + len(packet) - l4
    struct.pack_into(">H", changed, l4 + UDP_CHECK_OFFSET, total % 0xFFFF)
    assert complete_checksum(changed, l4, UDP_CHECK_OFFSET)
    return bytes(changed)


def resplit(run: UdpRun) -> list[bytes]:
    """What the stack makes of a coalesced write: its checksum finished (the whole is then one
    valid datagram: the header's partial sum is right), cut into datagrams."""
    packet = bytearray(run.header + b"".join(bytes(p) for p in run.payloads))
    assert complete_checksum(packet, run.l4_offset, UDP_CHECK_OFFSET)
    assert_valid_datagram(6 if run.l4_offset == 40 else 4, bytes(packet))
    again = split_uso(bytes(packet), run.l4_offset, run.segment_size)
    assert again is not None
    return again


def flatten(items: list[bytes | UdpRun]) -> list[bytes]:
    out: list[bytes] = []
    for item in items:
        out += resplit(item) if isinstance(item, UdpRun) else [item]
    return out


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=MAX_RUN_SEGMENTS),
    size=st.integers(min_value=1, max_value=1000),
    shorter_by=st.integers(min_value=0, max_value=999),
    v6=st.booleans(),
)
def test_a_run_finished_and_split_again_is_the_datagrams_it_joined(
    count: int, size: int, shorter_by: int, v6: bool
) -> None:
    last = max(1, size - shorter_by)
    original = datagrams(count, size=size, last=last, v6=v6)
    if sum(len(p) for p in original) > 60000:  # beyond one run's 64 KiB: tested below
        return
    items = coalesce_udp(original)
    assert len(items) == 1
    run = items[0]
    assert isinstance(run, UdpRun)
    assert run.segment_size == size and run.packets == original
    assert resplit(run) == original


def test_another_flow_or_a_longer_datagram_ends_a_run_and_order_is_kept() -> None:
    a = datagrams(4)
    b = [other_port(p) for p in datagrams(3)]
    longer = datagrams(2, size=SEGMENT + 10)
    packets = a[:2] + b + a[2:] + longer
    items = coalesce_udp(packets)
    assert [len(i.packets) if isinstance(i, UdpRun) else 1 for i in items] == [2, 3, 2, 2]
    assert [bytes(p) for i in items if isinstance(i, UdpRun) for p in i.payloads] == [
        p[28:] for p in packets
    ]
    for item in items:
        assert isinstance(item, UdpRun)
        for packet in resplit(item):
            assert_valid_datagram(4, packet)


def test_a_shorter_datagram_is_the_last_of_its_run() -> None:
    first = datagrams(3, last=50)
    second = datagrams(2)
    items = coalesce_udp(first + second)
    assert [i.packets for i in items if isinstance(i, UdpRun)] == [first, second]


def test_fragments_other_protocols_and_items_that_are_no_bytes_pass_through() -> None:
    a, b, c = datagrams(3)
    fragment = bytearray(b)
    fragment[6] |= 0x20  # more fragments
    tcp = bytearray(b)
    tcp[9] = 6
    marker = object()
    items = coalesce_udp([a, bytes(fragment), b, bytes(tcp), c, marker, a, b])
    assert items[:6] == [a, bytes(fragment), b, bytes(tcp), c, marker]
    assert isinstance(items[6], UdpRun) and items[6].packets == [a, b]
    assert coalesce_udp([b"", b"\x45", a[:27]]) == [b"", b"\x45", a[:27]]


def test_a_run_holds_at_most_64_datagrams_and_64_kib() -> None:
    many = datagrams(MAX_RUN_SEGMENTS + 6)
    counts = [len(i.packets) for i in coalesce_udp(many) if isinstance(i, UdpRun)]
    assert counts == [MAX_RUN_SEGMENTS, 6]
    big = datagrams(60, size=1400)  # 84 000 payload bytes
    runs = coalesce_udp(big)
    assert [len(r.packets) for r in runs if isinstance(r, UdpRun)] == [46, 14]  # 46 x 1400 + 28
    for run in runs:
        assert isinstance(run, UdpRun)
        total = struct.unpack_from(">H", run.header, 2)[0]
        assert total == 28 + sum(len(p) for p in run.payloads) <= 65535
    assert flatten(runs) == big


def test_ipv6_runs_set_the_payload_length_not_a_header_checksum() -> None:
    original = datagrams(5, v6=True, last=17)
    (run,) = coalesce_udp(original)
    assert isinstance(run, UdpRun)
    assert struct.unpack_from(">H", run.header, 4)[0] == 8 + 4 * SEGMENT + 17
    for packet in resplit(run):
        assert_valid_datagram(6, packet)
    assert resplit(run) == original
