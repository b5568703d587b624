"""ICMP and ICMPv6 echo messages (RFC 792, RFC 4443 §4): the probes of the load-balance monitor.

Pure codec: ``pack_echo_request`` builds what a raw socket sends, ``unpack_echo_reply`` reads what
it receives (an IPv4 raw socket hands over the IP header too; an ICMPv6 one does not).
"""

import struct

from fluxify.protocol.checksum import internet_checksum

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ECHO = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
ECHO_HEADER_SIZE = ECHO.size  # 8
IPV4_MIN_HEADER_SIZE = 20
IPV4_VERSION = 4


def pack_echo_request(identifier: int, sequence: int, payload: bytes = b"", *, v6: bool) -> bytes:
    """An echo request. ICMPv6 leaves the checksum 0: the kernel fills it in (RFC 3542 §3.1)."""
    kind = ICMPV6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
    unsummed = ECHO.pack(kind, 0, 0, identifier & 0xFFFF, sequence & 0xFFFF) + payload
    if v6:
        return unsummed
    checksum = internet_checksum(unsummed)
    return ECHO.pack(kind, 0, checksum, identifier & 0xFFFF, sequence & 0xFFFF) + payload


def unpack_echo_reply(data: bytes, *, v6: bool) -> tuple[int, int] | None:
    """``(identifier, sequence)`` of an echo reply, or None for anything else or malformed.

    For IPv4, ``data`` starts with the IP header, as a raw socket receives it.
    """
    if not v6:
        if len(data) < IPV4_MIN_HEADER_SIZE or data[0] >> 4 != IPV4_VERSION:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < ECHO_HEADER_SIZE:
        return None
    kind, code, _checksum, identifier, sequence = ECHO.unpack_from(data)
    if kind != (ICMPV6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY) or code != 0:
        return None
    return identifier, sequence
