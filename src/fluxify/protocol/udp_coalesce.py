"""Coalescing consecutive UDP datagrams of one flow into one super-packet (receive offload).

The TUN takes a UDP packet of up to 64 KiB with a segment size (``GSO_UDP_L4``, Linux 6.2+)
and the stack cuts it back into the datagrams (``__udp_gso_segment``), or hands it whole to a
socket with ``UDP_GRO``: one write instead of one per datagram, which is what a stream of small
datagrams (a game, a call, QUIC) costs the receiving end most. A run joins the packets the bond
engine released, in order, while each one has the same IP and UDP headers as the first apart
from the lengths, IPv4 ID and checksums, and a payload of the first one's size; a shorter one is
the run's last (the segment size is what every datagram but the last carries), at most
``MAX_RUN_SEGMENTS`` and 64 KiB. Fragments, IPv4 options, IPv6 extension headers and empty
datagrams pass through as they are, as does every item that is not ``bytes``. Pure byte work.
"""

import struct
from collections.abc import Iterable
from typing import TypeVar

from fluxify.protocol.checksum import UDP_CHECK_OFFSET
from fluxify.protocol.gso_run import MAX_RUN_BYTES, GsoRun, set_run_lengths
from fluxify.protocol.udp_segment import UDP_HEADER_SIZE, UDP_PROTOCOL

MAX_RUN_SEGMENTS = 64  # the kernel takes up to 128 (UDP_MAX_SEGMENTS)
_U16 = struct.Struct(">H")
_IPV4_HEADERS = 20 + UDP_HEADER_SIZE
_IPV6_HEADERS = 40 + UDP_HEADER_SIZE

T = TypeVar("T")


class UdpRun(GsoRun):
    """A run of one flow's UDP datagrams (``GsoRun``)."""

    __slots__ = ()


def _mask(l4_offset: int) -> int:
    """All header bits that must be equal within a run (lengths, ID and checksums zeroed)."""
    keep = bytearray(b"\xff" * (l4_offset + UDP_HEADER_SIZE))
    varying = [(l4_offset + 4, 4)]  # UDP length and checksum
    varying += [(2, 4), (10, 2)] if l4_offset == 20 else [(4, 2)]
    for start, size in varying:
        keep[start : start + size] = bytes(size)
    return int.from_bytes(keep, "big")


_MASKS = {20: _mask(20), 40: _mask(40)}


def _udp_offset(packet: bytes) -> int:
    """The UDP header's offset in a packet that may join a run (20 or 40), else 0."""
    size = len(packet)
    first = packet[0] if size else 0
    if first == 0x45:  # IPv4 without options
        if (
            size <= _IPV4_HEADERS
            or packet[9] != UDP_PROTOCOL
            or packet[6] & 0x3F  # MF or a fragment offset
            or packet[7]
            or _U16.unpack_from(packet, 2)[0] != size
        ):
            return 0
        l4 = 20
    elif first >> 4 == 6:
        if (
            size <= _IPV6_HEADERS
            or packet[6] != UDP_PROTOCOL
            or _U16.unpack_from(packet, 4)[0] + 40 != size
        ):
            return 0
        l4 = 40
    else:
        return 0
    return l4 if _U16.unpack_from(packet, l4 + 4)[0] == size - l4 else 0


def coalesce_udp(items: Iterable[bytes | T]) -> list[bytes | T | UdpRun]:
    """``items`` in the same order, runs of one UDP flow's datagrams joined into
    :class:`UdpRun`; anything else (and every item that is not ``bytes``) as it was."""
    out: list[bytes | T | UdpRun] = []
    run: list[bytes] = []
    run_masked = run_size = run_room = run_l4 = 0
    closed = True
    for item in items:
        if not isinstance(item, bytes) or not (l4 := _udp_offset(item)):
            if run:
                out.append(_finish(run, run_l4, run_size))
                run = []
            out.append(item)
            closed = True
            continue
        payload = len(item) - l4 - UDP_HEADER_SIZE
        masked = int.from_bytes(item[: l4 + UDP_HEADER_SIZE], "big") & _MASKS[l4]
        if (
            closed
            or masked != run_masked
            or payload > run_size
            or payload > run_room
            or len(run) >= MAX_RUN_SEGMENTS
        ):
            if run:
                out.append(_finish(run, run_l4, run_size))
            run = [item]
            run_masked, run_l4, run_size = masked, l4, payload
            # What the length field still takes: IPv4 counts its header, IPv6 does not.
            run_room = MAX_RUN_BYTES - (_IPV4_HEADERS if l4 == 20 else UDP_HEADER_SIZE) - payload
        else:
            run.append(item)
            run_room -= payload
        closed = payload < run_size
    if run:
        out.append(_finish(run, run_l4, run_size))
    return out


def _finish(run: list[bytes], l4: int, segment_size: int) -> bytes | UdpRun:
    first = run[0]
    if len(run) == 1:
        return first
    headers = l4 + UDP_HEADER_SIZE
    payload_bytes = sum(len(p) for p in run) - headers * len(run)
    udp_length = UDP_HEADER_SIZE + payload_bytes
    header = bytearray(first[:headers])
    _U16.pack_into(header, l4 + 4, udp_length)
    set_run_lengths(header, l4, udp_length, UDP_PROTOCOL, UDP_CHECK_OFFSET)
    payloads = [memoryview(p)[headers:] for p in run]
    return UdpRun(run, bytes(header), l4, segment_size, payloads)
