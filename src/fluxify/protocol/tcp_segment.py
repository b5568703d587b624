"""Splitting a TCP segmentation-offload super-packet into MTU-sized IP packets.

A TUN with TSO hands over one TCP packet of up to 64 KiB and the segment size (MSS) the stack
chose. :func:`split_tso` cuts it the way a NIC would: per segment the IPv4 total length, ID
(+1 per segment) and header checksum or the IPv6 payload length, the TCP sequence number,
the flags (CWR on the first segment only, FIN and PSH on the last only) and a complete TCP
checksum (RFC 793 §3.1 with the RFC 2460 §8.1 pseudo-header for IPv6). Complete, because a
v1 peer writes it to a plain TUN; towards a peer that negotiated ``csum-partial`` the checksum
field keeps the pseudo-header sum instead (``partial``), which :func:`partial_tcp` recognises
on the other end (docs/protocol.md §3.5). Pure byte work;
the RFC 1071 sums (``protocol.checksum``) are inlined in the per-segment loop.
"""

import struct

from fluxify.protocol.checksum import (
    FOLD_BITS_1,
    FOLD_BITS_2,
    FOLD_BITS_3,
    FOLD_MASK_1,
    FOLD_MASK_2,
    FOLD_MASK_3,
    ONES,
    ones_sum,
)

IPV4_HEADER_MIN = 20
IPV6_HEADER_SIZE = 40
TCP_HEADER_MIN = 20
TCP_PROTOCOL = 6
TCP_CHECK_OFFSET = 16  # within the TCP header
TCP_FIN = 0x01
TCP_PSH = 0x08
TCP_CWR = 0x80
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_IPV4_LENGTH_ID = struct.Struct(">HH")
_ADDRESSES_V4 = struct.Struct(">4H")  # source and destination as 16-bit words
_ADDRESSES_V6 = struct.Struct(">16H")


def split_tso(
    packet: bytes, l4_offset: int, mss: int, *, partial: bool = False
) -> list[bytes] | None:
    """The IP packets of TCP super-packet ``packet`` (IPv4 or IPv6, TCP at ``l4_offset``) with
    at most ``mss`` payload bytes each, in order; None when it does not parse as one.

    ``partial``: each segment's TCP checksum field holds its pseudo-header sum (the kernel's
    CHECKSUM_PARTIAL, feature ``csum-partial``) and the payload is not summed."""
    size = len(packet)
    if mss <= 0 or size < IPV4_HEADER_MIN or l4_offset + TCP_HEADER_MIN > size:
        return None
    version = packet[0] >> 4
    if version == 4:
        ip_header = (packet[0] & 0x0F) * 4
        if ip_header < IPV4_HEADER_MIN or ip_header != l4_offset or packet[9] != TCP_PROTOCOL:
            return None
        addresses = ones_sum(packet[12:20])
    elif version == 6:
        # TCP right behind the fixed header: an extension header chain (or another protocol)
        # is not split as TCP.
        if l4_offset != IPV6_HEADER_SIZE or packet[6] != TCP_PROTOCOL:
            return None
        ip_header = 0
        addresses = ones_sum(packet[8:40])
    else:
        return None
    tcp_header = (packet[l4_offset + 12] >> 4) * 4
    headers = l4_offset + tcp_header
    if tcp_header < TCP_HEADER_MIN or headers > size:
        return None
    l4 = l4_offset
    check_at = l4 + TCP_CHECK_OFFSET
    first_id = _U16.unpack_from(packet, 4)[0] if version == 4 else 0
    first_seq = _U32.unpack_from(packet, l4 + 4)[0]
    flags = packet[l4 + 13]
    # The sums of what every segment shares, with the fields that vary zeroed; per segment only
    # those fields and the payload are added (RFC 1624 style), the headers are not re-read.
    template = bytearray(packet[:headers])
    template[l4 + 4 : l4 + 8] = b"\0\0\0\0"
    template[l4 + 13] = 0
    template[check_at : check_at + 2] = b"\0\0"
    pseudo = addresses + TCP_PROTOCOL
    tcp_base = pseudo + ones_sum(template[l4:])
    ip_base = 0
    if version == 4:
        template[2:6] = b"\0\0\0\0"
        template[10:12] = b"\0\0"
        ip_base = ones_sum(template[:ip_header])
    count = max(1, -(-(size - headers) // mss))
    last = count - 1
    out: list[bytes] = []
    pack16 = _U16.pack_into
    pack32 = _U32.pack_into
    ip_fields = _IPV4_LENGTH_ID.pack_into
    join = b"".join
    from_bytes = int.from_bytes
    for index in range(count):
        start = headers + index * mss
        segment = packet[start : start + mss]
        tcp_length = tcp_header + len(segment)
        seq = (first_seq + index * mss) & 0xFFFF_FFFF
        segment_flags = flags
        if index:
            segment_flags &= ~TCP_CWR
        if index != last:
            segment_flags &= ~(TCP_FIN | TCP_PSH)
        if partial:
            check = (pseudo + tcp_length) % ONES
        else:
            # ones_sum(segment), inlined and unrolled: this line is most of a split's cost.
            folded = from_bytes(segment, "little")
            folded = (folded & FOLD_MASK_1) + (folded >> FOLD_BITS_1)
            folded = (folded & FOLD_MASK_2) + (folded >> FOLD_BITS_2)
            folded = (folded & FOLD_MASK_3) + (folded >> FOLD_BITS_3)
            folded %= ONES
            total = tcp_base + tcp_length + (seq >> 16) + (seq & 0xFFFF) + segment_flags
            check = -(total + (((folded & 0xFF) << 8) | (folded >> 8))) % ONES
        if version == 4:
            length = l4 + tcp_length
            ident = (first_id + index) & 0xFFFF
            ip_fields(template, 2, length, ident)
            pack16(template, 10, -(ip_base + length + ident) % ONES)
        else:
            pack16(template, 4, l4 - IPV6_HEADER_SIZE + tcp_length)
        pack32(template, l4 + 4, seq)
        template[l4 + 13] = segment_flags
        pack16(template, check_at, check)
        out.append(join((template, segment)))
    return out


def partial_tcp(packet: bytes | bytearray) -> int:
    """The TCP offset of ``packet`` when it is a whole TCP packet (IPv4 unfragmented, or IPv6
    with TCP right behind the fixed header, lengths matching its size) whose checksum field
    holds its pseudo-header sum, as :func:`split_tso` with ``partial`` and the kernel's
    CHECKSUM_PARTIAL leave it; else 0.

    A complete checksum equal to that sum (1 in 65535) answers yes too, harmlessly for an
    intact packet: finishing it writes the same value back."""
    size = len(packet)
    if size < 40:
        return 0
    first = packet[0]
    if first >> 4 == 4:
        l4 = (first & 0x0F) * 4
        if (
            packet[9] != TCP_PROTOCOL
            or packet[6] & 0x3F  # MF or a fragment offset
            or packet[7]
            or l4 < IPV4_HEADER_MIN
            or l4 + TCP_HEADER_MIN > size
            or _U16.unpack_from(packet, 2)[0] != size
        ):
            return 0
        total = sum(_ADDRESSES_V4.unpack_from(packet, 12))
    elif first >> 4 == 6:
        if (
            size < IPV6_HEADER_SIZE + TCP_HEADER_MIN
            or packet[6] != TCP_PROTOCOL
            or _U16.unpack_from(packet, 4)[0] + IPV6_HEADER_SIZE != size
        ):
            return 0
        l4 = IPV6_HEADER_SIZE
        total = sum(_ADDRESSES_V6.unpack_from(packet, 8))
    else:
        return 0
    total += TCP_PROTOCOL + size - l4 - _U16.unpack_from(packet, l4 + TCP_CHECK_OFFSET)[0]
    return 0 if total % ONES else l4
