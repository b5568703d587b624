"""The Internet checksum (RFC 1071): ones'-complement sums, checksums, partial checksums.

Pure arithmetic on bytes, shared by the TSO/USO splitters, the TCP coalescer, the TUN reader and
the ICMP probes.

The ones'-complement identity 2^16 ≡ 1 (mod 0xFFFF) makes the big-endian sum of 16-bit words the
buffer read as one integer, modulo 0xFFFF. Read little-endian it is the byte-swapped sum (RFC
1071 §2(B)) and CPython converts that ~35 % faster; a trailing odd byte then needs no padding
(it lands at an even power of 256, ≡ 1, as the high byte of a zero-padded word would after the
swap). Sums are kept as integers in 0..0xFFFE (0xFFFF, the other zero, reads as 0).

The splitters inline :func:`ones_sum` in their per-segment loops with the ``FOLD_*`` constants
below: a call there costs as much as a quarter of the sum itself.
"""

import struct

ONES = 0xFFFF
UDP_CHECK_OFFSET = 6  # within the UDP header
# Halving a big integer by shifts (by multiples of 16 bits, so the sum is kept) before the
# division is ~35 % faster for a 1400-byte payload than dividing it whole (CPython divides
# digit by digit).
FOLD_BITS_1, FOLD_BITS_2, FOLD_BITS_3 = 6144, 3072, 1536
FOLD_MASK_1, FOLD_MASK_2, FOLD_MASK_3 = ((1 << bits) - 1 for bits in (6144, 3072, 1536))
_U16 = struct.Struct(">H")


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """Ones'-complement sum (mod 0xFFFF) of ``data`` as big-endian 16-bit words."""
    folded = int.from_bytes(data, "little")
    folded = (folded & FOLD_MASK_1) + (folded >> FOLD_BITS_1)
    folded = (folded & FOLD_MASK_2) + (folded >> FOLD_BITS_2)
    folded = (folded & FOLD_MASK_3) + (folded >> FOLD_BITS_3)
    folded %= ONES
    return ((folded & 0xFF) << 8) | (folded >> 8)


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The RFC 1071 checksum of ``data`` (even-aligned) plus ``initial`` (a partial sum):
    0..0xFFFE, so data that sums right gives 0."""
    return -(ones_sum(data) + initial) % ONES


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
        check = ONES
    _U16.pack_into(packet, field, check)
    return True
