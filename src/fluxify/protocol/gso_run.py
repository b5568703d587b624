"""A run of packets of one flow joined into one super-packet, as the receive-offload joiners
(``tcp_coalesce``, ``udp_coalesce``) hand it to the TUN writer, and the header work they share.
Pure data and byte work."""

import struct

from fluxify.protocol.checksum import ONES, ones_sum

IPV4_L4_OFFSET = 20  # a run's IPv4 header has no options
MAX_RUN_BYTES = 65535  # what a run's IPv4 total length / IPv6 payload length can say
_U16 = struct.Struct(">H")


class GsoRun:
    """The ``packets`` of one flow as one packet: ``header`` (IP + transport header, lengths set,
    the transport checksum holding the pseudo-header sum for the stack to finish) and the
    ``payloads`` behind it, each ``segment_size`` bytes but the last; the transport header at
    ``l4_offset``."""

    __slots__ = ("header", "l4_offset", "packets", "payloads", "segment_size")

    def __init__(
        self,
        packets: list[bytes],
        header: bytes,
        l4_offset: int,
        segment_size: int,
        payloads: list[memoryview],
    ) -> None:
        self.packets = packets
        self.header = header
        self.l4_offset = l4_offset
        self.segment_size = segment_size
        self.payloads = payloads

    @property
    def ipv6(self) -> bool:
        return self.l4_offset != IPV4_L4_OFFSET


def set_run_lengths(
    header: bytearray, l4_offset: int, l4_length: int, protocol: int, check_offset: int
) -> None:
    """Give a run's ``header`` the lengths of the whole (``l4_length``: transport header and
    every payload) — IPv4 total length and header checksum, or the IPv6 payload length — and put
    the folded pseudo-header sum, not complemented, in the transport checksum at ``check_offset``
    (CHECKSUM_PARTIAL: the kernel adds the rest)."""
    if l4_offset == IPV4_L4_OFFSET:
        _U16.pack_into(header, 2, l4_offset + l4_length)
        header[10:12] = b"\0\0"
        _U16.pack_into(header, 10, -ones_sum(header[:20]) % ONES)
        addresses = ones_sum(header[12:20])
    else:
        _U16.pack_into(header, 4, l4_length)
        addresses = ones_sum(header[8:40])
    _U16.pack_into(header, l4_offset + check_offset, (addresses + protocol + l4_length) % ONES)
