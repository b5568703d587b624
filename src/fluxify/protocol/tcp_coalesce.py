"""Coalescing consecutive TCP segments of one flow into one super-packet (receive offload, GRO).

The TUN takes a TCP packet of up to 64 KiB with a segment size and hands it to the stack as
one: one write and one trip through the kernel's TCP receive path instead of ~45. A run joins
the packets the bond engine released, in order, while each one continues the previous exactly
as Linux GRO would merge them (``tcp_gro_receive``): the same IP and TCP headers apart from the
lengths, IPv4 ID and checksums, sequence number and PSH; contiguous sequence numbers; flags ACK
(PSH ends the run); payloads of the first one's size (a shorter one ends the run); at most
64 KiB. Everything else passes through as it is. Pure byte work.
"""

import struct

from fluxify.protocol.gso_run import MAX_RUN_BYTES, GsoRun, set_run_lengths
from fluxify.protocol.tcp_segment import TCP_CHECK_OFFSET, TCP_PROTOCOL

MAX_RUN_SEGMENTS = 64
_ACK = 0x10
_PSH = 0x08
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class TcpRun(GsoRun):
    """A run of one flow's TCP segments."""

    __slots__ = ()


_MASKS: dict[tuple[int, int], int] = {}


def _mask(l4_offset: int, headers: int) -> int:
    """All header bits that must be equal within a run (the varying fields zeroed)."""
    mask = _MASKS.get((l4_offset, headers))
    if mask is None:
        keep = bytearray(b"\xff" * headers)
        varying = [(l4_offset + 4, 4), (l4_offset + 13, 1), (l4_offset + TCP_CHECK_OFFSET, 2)]
        varying += [(2, 4), (10, 2)] if l4_offset == 20 else [(4, 2)]  # lengths, ID, checksum
        for start, size in varying:
            keep[start : start + size] = bytes(size)
        mask = _MASKS[(l4_offset, headers)] = int.from_bytes(keep, "big")
    return mask


def _parse(packet: bytes) -> tuple[int, int, int] | None:
    """(TCP offset, header bytes, flags) of a packet that may join a run, else None."""
    size = len(packet)
    if size < 40:
        return None
    first = packet[0]
    if first == 0x45:  # IPv4 without options
        if packet[9] != TCP_PROTOCOL or packet[6] & 0x3F or packet[7]:  # MF or fragment offset
            return None
        if _U16.unpack_from(packet, 2)[0] != size:
            return None
        l4 = 20
    elif first >> 4 == 6:
        if size < 60 or packet[6] != TCP_PROTOCOL or _U16.unpack_from(packet, 4)[0] + 40 != size:
            return None
        l4 = 40
    else:
        return None
    headers = l4 + (packet[l4 + 12] >> 4) * 4
    flags = packet[l4 + 13]
    if headers >= size or headers < l4 + 20 or flags & ~_PSH != _ACK:
        return None
    return l4, headers, flags


def coalesce(packets: list[bytes]) -> list[bytes | TcpRun]:
    """``packets`` in the same order, runs of one TCP flow joined into :class:`TcpRun`."""
    out: list[bytes | TcpRun] = []
    run: list[bytes] = []
    run_masked = run_next = run_size = run_room = run_l4 = run_headers = 0
    closed = True
    for packet in packets:
        parsed = _parse(packet)
        if parsed is None:
            if run:
                out.append(_finish(run, run_l4, run_headers, run_size))
                run = []
            out.append(packet)
            closed = True
            continue
        l4, headers, flags = parsed
        payload = len(packet) - headers
        seq = _U32.unpack_from(packet, l4 + 4)[0]
        mask = _MASKS.get((l4, headers)) or _mask(l4, headers)
        masked = int.from_bytes(packet[:headers], "big") & mask
        if (
            closed
            or masked != run_masked
            or headers != run_headers
            or seq != run_next
            or payload > run_size
            or payload > run_room
            or len(run) >= MAX_RUN_SEGMENTS
        ):
            if run:
                out.append(_finish(run, run_l4, run_headers, run_size))
            run = [packet]
            run_masked, run_l4, run_headers, run_size = masked, l4, headers, payload
            # What the length field still takes: IPv4 counts its header, IPv6 does not.
            run_room = MAX_RUN_BYTES - (headers if l4 == 20 else headers - l4) - payload
        else:
            run.append(packet)
            run_room -= payload
        run_next = (seq + payload) & 0xFFFF_FFFF
        closed = bool(flags & _PSH) or payload < run_size
    if run:
        out.append(_finish(run, run_l4, run_headers, run_size))
    return out


def _finish(run: list[bytes], l4: int, headers: int, segment_size: int) -> bytes | TcpRun:
    first = run[0]
    if len(run) == 1:
        return first
    payload_bytes = sum(len(p) for p in run) - headers * len(run)
    header = bytearray(first[:headers])
    header[l4 + 13] |= run[-1][l4 + 13] & _PSH
    set_run_lengths(header, l4, headers - l4 + payload_bytes, TCP_PROTOCOL, TCP_CHECK_OFFSET)
    payloads = [memoryview(p)[headers:] for p in run]
    return TcpRun(run, bytes(header), l4, segment_size, payloads)
