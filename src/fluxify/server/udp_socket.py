"""The server's UDP data socket: dual-stack, and replies leave from the address the client used.

The original answered from a kernel-chosen source address, which a multi-homed server gets wrong
and a client's connected socket then drops (ISSUE 4). We ask the kernel for the destination
address of every datagram (``IPV6_RECVPKTINFO``; IPv4 clients arrive v4-mapped) and hand it back
as ``IPV6_PKTINFO`` when replying on that path.
"""

import socket
import struct

from fluxify.errors import HostError
from fluxify.linux import rx_timestamps

SOCKET_BUFFER_BYTES = 8 * 1024 * 1024  # absorbs bursts while the loop is busy elsewhere
IN6_PKTINFO = struct.Struct("=16sI")  # struct in6_pktinfo: address, interface index
ANCILLARY_SPACE = socket.CMSG_SPACE(IN6_PKTINFO.size) + rx_timestamps.TIMESTAMP_SPACE
Address = tuple[str, int, int, int]
Ancillary = list[tuple[int, int, bytes]]


def open_data_socket(port: int, host: str = "::") -> socket.socket:
    """A non-blocking dual-stack UDP socket bound to ``[host]:port`` that reports destinations."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        rx_timestamps.enable(sock)  # one-way delays without our own receive backlog
        _grow_buffers(sock)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HostError(
            f"cannot open the UDP data port {port}: {exc.strerror or exc}; "
            "is another server running, or is IPv6 disabled on this host?"
        ) from exc
    sock.setblocking(False)
    return sock


def _grow_buffers(sock: socket.socket) -> None:
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # SO_*BUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_BYTES)
        except OSError:  # not root: the sysctl-capped request is the best we can do
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER_BYTES)


def reply_ancillary(ancdata: list[tuple[int, int, bytes]]) -> Ancillary:
    """The ancillary data that makes a reply leave from the address a datagram was sent to."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            local, _ifindex = IN6_PKTINFO.unpack_from(data)
            # Interface 0: the route decides the way out, only the source address is pinned.
            return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, IN6_PKTINFO.pack(local, 0))]
    return []


def path_label(address: Address) -> str:
    """``ip:port`` without the v4-mapped prefix, for logs and the TUI."""
    host = address[0].removeprefix("::ffff:")
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
