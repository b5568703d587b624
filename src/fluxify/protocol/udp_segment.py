"""Splitting a UDP segmentation-offload (USO) super-packet into MTU-sized IP packets.

An application that sends with ``UDP_SEGMENT`` (QUIC stacks do) through a TUN with USO hands
over one UDP packet of up to 64 KiB and the segment size: the payload bytes of every datagram
but the last. :func:`split_uso` cuts it the way the kernel's ``__udp_gso_segment`` does: per
datagram its own UDP header (length and a **complete** checksum, 0 sent as 0xFFFF per RFC 768)
and the IPv4 total length, ID (+1 per datagram) and header checksum, or the IPv6 payload length.
Complete, because a v1 peer writes each packet to a plain TUN. Pure byte work.
"""

import struct

from fluxify.protocol.checksum import ONES, ones_sum
from fluxify.protocol.tcp_segment import IPV4_HEADER_MIN, IPV6_HEADER_SIZE

UDP_HEADER_SIZE = 8
UDP_PROTOCOL = 17
IPV6_NEXT_HEADER_OFFSET = 6
_U16 = struct.Struct(">H")
_IPV4_LENGTH_ID = struct.Struct(">HH")
_UDP_LENGTH_CHECK = struct.Struct(">HH")


def split_uso(packet: bytes, l4_offset: int, segment_size: int) -> list[bytes] | None:
    """The IP packets of UDP super-packet ``packet`` (IPv4 or IPv6, UDP at ``l4_offset``) with at
    most ``segment_size`` payload bytes each, in order; None when it does not parse as one."""
    size = len(packet)
    headers = l4_offset + UDP_HEADER_SIZE
    if segment_size <= 0 or size < IPV4_HEADER_MIN or headers > size:
        return None
    version = packet[0] >> 4
    if version == 4:
        if (packet[0] & 0x0F) * 4 != l4_offset or packet[9] != UDP_PROTOCOL:
            return None
        addresses = ones_sum(packet[12:20])
    elif version == 6:
        # Extension headers before UDP are not split here (the stack sends USO without them).
        if l4_offset != IPV6_HEADER_SIZE or packet[IPV6_NEXT_HEADER_OFFSET] != UDP_PROTOCOL:
            return None
        addresses = ones_sum(packet[8:40])
    else:
        return None
    template = bytearray(packet[:headers])
    template[l4_offset + 4 : l4_offset + 8] = b"\0\0\0\0"  # length and checksum vary
    # Ports, addresses and protocol are the same in every datagram; the UDP length counts twice
    # in the checksum (pseudo-header and header).
    udp_base = addresses + UDP_PROTOCOL + ones_sum(template[l4_offset:])
    ip_base = 0
    first_id = 0
    if version == 4:
        first_id = _U16.unpack_from(packet, 4)[0]
        template[2:6] = b"\0\0\0\0"
        template[10:12] = b"\0\0"
        ip_base = ones_sum(template[:l4_offset])
    count = max(1, -(-(size - headers) // segment_size))
    out: list[bytes] = []
    for index in range(count):
        start = headers + index * segment_size
        payload = packet[start : start + segment_size]
        udp_length = UDP_HEADER_SIZE + len(payload)
        check = -(udp_base + 2 * udp_length + ones_sum(payload)) % ONES
        _UDP_LENGTH_CHECK.pack_into(template, l4_offset + 4, udp_length, check or ONES)
        if version == 4:
            length = l4_offset + udp_length
            ident = (first_id + index) & 0xFFFF
            _IPV4_LENGTH_ID.pack_into(template, 2, length, ident)
            _U16.pack_into(template, 10, -(ip_base + length + ident) % ONES)
        else:
            _U16.pack_into(template, 4, udp_length)
        out.append(b"".join((template, payload)))
    return out
