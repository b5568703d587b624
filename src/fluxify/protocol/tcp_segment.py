"""Splitting a TCP segmentation-offload super-packet into MTU-sized IP packets; checksums.

A TUN with TSO hands over one TCP packet of up to 64 KiB and the segment size (MSS) the stack
chose. :func:`split_tso` cuts it the way a NIC would: per segment the IPv4 total length, ID
(+1 per segment) and header checksum or the IPv6 payload length, the TCP sequence number,
the flags (CWR on the first segment only, FIN and PSH on the last only) and a complete TCP
checksum (RFC 793 §3.1 with the RFC 2460 §8.1 pseudo-header for IPv6). Complete, because every
packet in the tunnel may go to a v1 peer, which writes it to a plain TUN. Pure byte work.

Checksums use the ones'-complement identity 2^16 ≡ 1 (mod 0xFFFF): the big-endian sum of
16-bit words is the buffer read as one integer, modulo 0xFFFF. Read little-endian it is the
byte-swapped sum (RFC 1071 §2(B)) and CPython converts that ~35 % faster; a trailing odd byte
then needs no padding.
"""

import struct

IPV4_HEADER_MIN = 20
IPV6_HEADER_SIZE = 40
TCP_HEADER_MIN = 20
TCP_PROTOCOL = 6
TCP_CHECK_OFFSET = 16  # within the TCP header
UDP_CHECK_OFFSET = 6  # within the UDP header
TCP_FIN = 0x01
TCP_PSH = 0x08
TCP_CWR = 0x80
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_IPV4_LENGTH_ID = struct.Struct(">HH")
_ONES = 0xFFFF
# Halving a big integer by shifts (by multiples of 16 bits, so the sum is kept) before the
# division is ~35 % faster for a 1400-byte payload than dividing it whole (CPython divides
# digit by digit).
_FOLD_BITS_1, _FOLD_BITS_2, _FOLD_BITS_3 = 6144, 3072, 1536
_FOLD_MASK_1, _FOLD_MASK_2, _FOLD_MASK_3 = ((1 << bits) - 1 for bits in (6144, 3072, 1536))


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """Ones'-complement sum (mod 0xFFFF) of ``data`` as big-endian 16-bit words."""
    folded = int.from_bytes(data, "little")
    folded = (folded & _FOLD_MASK_1) + (folded >> _FOLD_BITS_1)
    folded = (folded & _FOLD_MASK_2) + (folded >> _FOLD_BITS_2)
    folded = (folded & _FOLD_MASK_3) + (folded >> _FOLD_BITS_3)
    folded %= _ONES
    return ((folded & 0xFF) << 8) | (folded >> 8)


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The RFC 1071 checksum of ``data`` (even-aligned) plus ``initial`` (a partial sum)."""
    return -(ones_sum(data) + initial) % _ONES


def complete_checksum(packet: bytearray, start: int, offset: int) -> bool:
    """Finish a partial checksum in place (the kernel's CHECKSUM_PARTIAL, virtio NEEDS_CSUM).

    The 16 bits at ``start + offset`` hold the folded pseudo-header sum; the checksum covers
    ``packet[start:]``. A UDP checksum of 0 is sent as 0xFFFF (RFC 768). False when the offsets
    do not fit the packet (nothing written)."""
    field = start + offset
    if start < 0 or offset < 0 or field + 2 > len(packet):
        return False
    check = internet_checksum(memoryview(packet)[start:])
    if check == 0 and offset == UDP_CHECK_OFFSET:
        check = _ONES
    _U16.pack_into(packet, field, check)
    return True


def split_tso(packet: bytes, l4_offset: int, mss: int) -> list[bytes] | None:
    """The IP packets of TCP super-packet ``packet`` (IPv4 or IPv6, TCP at ``l4_offset``) with
    at most ``mss`` payload bytes each, in order; None when it does not parse as one."""
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
    tcp_base = addresses + TCP_PROTOCOL + ones_sum(template[l4:])
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
        # ones_sum(segment), inlined and unrolled: this line is most of a split's cost.
        folded = from_bytes(segment, "little")
        folded = (folded & _FOLD_MASK_1) + (folded >> _FOLD_BITS_1)
        folded = (folded & _FOLD_MASK_2) + (folded >> _FOLD_BITS_2)
        folded = (folded & _FOLD_MASK_3) + (folded >> _FOLD_BITS_3)
        folded %= _ONES
        total = tcp_base + tcp_length + (seq >> 16) + (seq & 0xFFFF) + segment_flags
        total += ((folded & 0xFF) << 8) | (folded >> 8)
        if version == 4:
            length = l4 + tcp_length
            ident = (first_id + index) & 0xFFFF
            ip_fields(template, 2, length, ident)
            pack16(template, 10, -(ip_base + length + ident) % _ONES)
        else:
            pack16(template, 4, l4 - IPV6_HEADER_SIZE + tcp_length)
        pack32(template, l4 + 4, seq)
        template[l4 + 13] = segment_flags
        pack16(template, check_at, -total % _ONES)
        out.append(join((template, segment)))
    return out
