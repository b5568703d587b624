"""Which inner packets are worth sending twice: small, rare and costly to lose.

A lost TCP SYN costs a second (the initial retransmission timeout), a lost DNS query or TLS /
QUIC handshake packet about as much, a lost FIN or RST leaves a connection hanging, a lost ping
looks like an outage. The bond engine sends these on two paths while two are alive; bulk data is
never duplicated. The check reads a few header bytes, allocates nothing and never raises.
"""

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
TCP_FIN_SYN_RST = 0x07
ICMP_ECHO_TYPES = (0, 8)  # echo reply, echo request
ICMPV6_ECHO_TYPES = (128, 129)
DNS_PORT = 53
QUIC_PORT = 443
TLS_HANDSHAKE_RECORD = 0x16
TLS_MAJOR_VERSION = 0x03
QUIC_LONG_HEADER = 0xC0  # header form + fixed bit: Initial / Handshake / 0-RTT packets
IPV6_HEADER_SIZE = 40
UDP_HEADER_SIZE = 8


def is_critical(packet: bytes) -> bool:
    """True for TCP SYN/FIN/RST, DNS, ICMP echo, TLS handshake records and QUIC long headers."""
    size = len(packet)
    # Bulk TCP over IPv4 first, in four byte reads: it is nearly every packet of a loaded bond,
    # and the full walk below cost ~0.36 us a packet here against ~0.1 (measured, timeit)
    if (
        size > 40
        and packet[0] == 0x45
        and packet[9] == IPPROTO_TCP
        and not packet[33] & TCP_FIN_SYN_RST
    ):
        payload = 20 + (packet[32] >> 4) * 4
        if size <= payload + 1 or packet[payload] != TLS_HANDSHAKE_RECORD:
            return False
    if size < 20:
        return False
    version = packet[0] >> 4
    if version == 4:
        proto = packet[9]
        start = (packet[0] & 0x0F) * 4
        if packet[6] & 0x1F or packet[7]:  # a fragment: ports are not where they seem
            return False
        echo_types: tuple[int, int] = ICMP_ECHO_TYPES
        icmp = IPPROTO_ICMP
    elif version == 6 and size >= IPV6_HEADER_SIZE:
        proto = packet[6]  # extension headers are rare in tunnels: they are not followed
        start = IPV6_HEADER_SIZE
        echo_types = ICMPV6_ECHO_TYPES
        icmp = IPPROTO_ICMPV6
    else:
        return False
    if proto == IPPROTO_TCP:
        if size < start + 20:
            return False
        if packet[start + 13] & TCP_FIN_SYN_RST:
            return True
        payload = start + (packet[start + 12] >> 4) * 4
        return (
            size > payload + 1
            and packet[payload] == TLS_HANDSHAKE_RECORD
            and packet[payload + 1] == TLS_MAJOR_VERSION
        )
    if proto == IPPROTO_UDP:
        if size < start + UDP_HEADER_SIZE:
            return False
        source = (packet[start] << 8) | packet[start + 1]
        dest = (packet[start + 2] << 8) | packet[start + 3]
        if DNS_PORT in (source, dest):
            return True
        payload = start + UDP_HEADER_SIZE
        return (
            QUIC_PORT in (source, dest)
            and size > payload
            and packet[payload] & QUIC_LONG_HEADER == QUIC_LONG_HEADER
        )
    if proto == icmp:
        return size > start and packet[start] in echo_types
    return False
