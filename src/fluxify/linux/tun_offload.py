"""The TUN with offloads: a virtio-net header on every packet, TCP super-packets split on read.

Opened with ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` (checksum, TSO4, TSO6), the TUN hands over
TCP packets of up to 64 KiB with their segment size; one read then replaces ~45 (measured:
0.16 µs per 1434 B against 0.89 for a plain read). :class:`TunReader` splits them at once
(``protocol.tcp_segment``), so the engine and the wire see ordinary MTU-sized IP packets with
complete checksums, as a v1 peer expects. Packets the stack left with a partial checksum
(``NEEDS_CSUM``) are completed. Towards a peer with feature ``csum-partial`` (docs/protocol.md
§3.5) TCP segments keep their partial checksum instead (``TunReader.partial_for``), and such a
session's TCP packets that hold one are written with ``NEEDS_CSUM`` for the kernel to finish.
Consecutive segments of one TCP flow, and consecutive datagrams of one UDP flow, are written as
one super-packet (``VnetTunWriter``); every other write carries a 10-byte header of zeros: a
plain packet whose checksums the kernel verifies. Without a vnet header (offloads off, an older
caller) both classes read and write plain packets.
"""

import fcntl
import logging
import os
import struct
from collections.abc import Callable

from fluxify.linux.tun import IFF_VNET_HDR, TUNSETOFFLOAD
from fluxify.linux.tun_writer import TunWriter
from fluxify.linux.udp_offload import offloads_disabled
from fluxify.protocol.checksum import UDP_CHECK_OFFSET, complete_checksum
from fluxify.protocol.drops import DropCounters, DropReason
from fluxify.protocol.gso_run import GsoRun
from fluxify.protocol.tcp_coalesce import TcpRun, coalesce
from fluxify.protocol.tcp_segment import TCP_CHECK_OFFSET, partial_tcp, split_tso
from fluxify.protocol.udp_coalesce import coalesce_udp
from fluxify.protocol.udp_segment import split_uso

log = logging.getLogger(__name__)

TUNGETIFF = 0x800454D2
TUN_F_CSUM = 0x01  # we take packets with a partial checksum (NEEDS_CSUM)
TUN_F_TSO4 = 0x02  # ... and TCP super-packets (needs TUN_F_CSUM)
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20  # ... and UDP super-packets (Linux 6.2+)
TUN_F_USO6 = 0x40
VIRTIO_NET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start/offset
VNET_HDR_SIZE = VIRTIO_NET_HDR.size  # 10 (TUNGETVNETHDRSZ's default)
VIRTIO_NET_HDR_F_NEEDS_CSUM = 0x01
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80
READ_BUFFER_BYTES = VNET_HDR_SIZE + 65536  # above the largest packet (65535) and its header
PLAIN_READ_BYTES = 65536
TSO_ENV = "FLUXIFY_TUN_TSO"
_ZERO_HEADER = bytes(VNET_HDR_SIZE)
_IFREQ = struct.Struct("16sH22x")
# By TCP offset: the header that has the kernel finish a partial TCP checksum (0: none to finish).
_PARTIAL_HEADERS: dict[int, bytes] = {0: _ZERO_HEADER}
_TCP_GSO = frozenset({VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6})


def _partial_header(l4_offset: int) -> bytes:
    """The vnet header of a whole TCP packet whose checksum the kernel is to finish
    (``NEEDS_CSUM``, no GSO), kept in ``_PARTIAL_HEADERS``."""
    header = VIRTIO_NET_HDR.pack(
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, l4_offset, TCP_CHECK_OFFSET
    )
    _PARTIAL_HEADERS[l4_offset] = header
    return header


def any_destination(_packet: bytes | bytearray) -> bool:
    """``TunReader.partial_for`` of a client: its one peer takes partial checksums."""
    return True


def open_flags() -> int:
    """The extra ``Tun.open`` flags for a data-plane TUN: ``IFF_VNET_HDR`` unless offloads are
    turned off (``-no-offload``)."""
    return 0 if offloads_disabled() else IFF_VNET_HDR


def has_vnet_header(fd: int) -> bool:
    """True when TUN ``fd`` was opened with ``IFF_VNET_HDR`` (False for anything else)."""
    try:
        answer = fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size))
    except OSError:
        return False
    return bool(_IFREQ.unpack(answer)[1] & IFF_VNET_HDR)


def enable_offloads(fd: int) -> tuple[bool, bool]:
    """Turn on checksum offload, TSO4/6 and, where the kernel has it (6.2+), USO4/6 on a vnet
    TUN; (TSO on, USO on). (False, False) where the kernel refuses or ``FLUXIFY_TUN_TSO=0`` asks
    for plain reads (coalesced writes stay on)."""
    if os.environ.get(TSO_ENV, "1") == "0":
        return False, False
    tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, tso | TUN_F_USO4 | TUN_F_USO6)
    except OSError:
        pass  # EINVAL before 6.2: try without USO
    else:
        return True, True
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, tso)
    except OSError as exc:
        log.warning("TUN offloads refused (%s): one packet per read", exc.strerror)
        return False, False
    return True, False


class TunReader:
    """Reads IP packets from a TUN ``fd``, a vnet one (super-packets split) or a plain one.

    ``read(budget)`` returns the packets of reads until the TUN is drained or ``budget`` packets
    were collected; ``super_packets`` counts the reads that were split. A packet that does not
    parse as its header says is dropped and counted (``BAD_SUPER_PACKET``; a read cut short or
    empty ``NOT_IP``). Not thread-safe.

    ``partial_for`` (feature ``csum-partial``): asked once per TCP packet the stack left with a
    partial checksum (a super-packet or one with ``NEEDS_CSUM``) whether its peer takes it so;
    then its segments keep the pseudo-header sum (``split_tso(partial=True)``) and
    ``partial_packets`` counts them. None (the default): every checksum is completed.
    """

    __slots__ = (
        "_buffer",
        "_view",
        "drops",
        "fd",
        "partial_for",
        "partial_packets",
        "super_packets",
        "vnet",
    )

    def __init__(self, fd: int, drops: DropCounters) -> None:
        self.fd = fd
        self.drops = drops
        self.vnet = has_vnet_header(fd)
        self.super_packets = 0
        self.partial_for: Callable[[bytes | bytearray], bool] | None = None
        self.partial_packets = 0
        self._buffer = bytearray(READ_BUFFER_BYTES if self.vnet else 0)
        self._view = memoryview(self._buffer)

    def read(self, budget: int) -> list[bytes]:
        if not self.vnet:
            return self._read_plain(budget)
        readv = os.readv
        fd = self.fd
        buffer = self._buffer
        buffers = [buffer]
        view = self._view
        unpack = VIRTIO_NET_HDR.unpack_from
        counts = self.drops.counts
        packets: list[bytes] = []
        while len(packets) < budget:
            try:
                size = readv(fd, buffers)
            except BlockingIOError:
                break
            if size <= VNET_HDR_SIZE or size == READ_BUFFER_BYTES:  # empty or cut short
                counts[DropReason.NOT_IP] += 1
                continue
            if not buffer[0] | buffer[1]:  # neither NEEDS_CSUM nor GSO: a finished packet
                packets.append(view[VNET_HDR_SIZE:size].tobytes())
                continue
            flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = unpack(view)
            gso_type &= ~VIRTIO_NET_HDR_GSO_ECN
            if gso_type == VIRTIO_NET_HDR_GSO_NONE:
                if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                    packet = bytearray(view[VNET_HDR_SIZE:size])
                    partial_for = self.partial_for
                    if (
                        partial_for is not None
                        and csum_offset == TCP_CHECK_OFFSET
                        and partial_tcp(packet) == csum_start
                        and partial_for(packet)
                    ):
                        self.partial_packets += 1
                    elif not complete_checksum(packet, csum_start, csum_offset):
                        counts[DropReason.BAD_SUPER_PACKET] += 1
                        continue
                    packets.append(bytes(packet))
                else:
                    packets.append(view[VNET_HDR_SIZE:size].tobytes())
                continue
            pieces = None
            if gso_type in _TCP_GSO:
                whole = view[VNET_HDR_SIZE:size].tobytes()
                partial_for = self.partial_for
                partial = partial_for is not None and partial_for(whole)
                pieces = split_tso(whole, csum_start, gso_size, partial=partial)
                if partial and pieces is not None:
                    self.partial_packets += len(pieces)
            elif gso_type == VIRTIO_NET_HDR_GSO_UDP_L4:
                pieces = split_uso(view[VNET_HDR_SIZE:size].tobytes(), csum_start, gso_size)
            if pieces is None:  # offsets, segment size or GSO type that do not fit
                counts[DropReason.BAD_SUPER_PACKET] += 1
                continue
            self.super_packets += 1
            packets += pieces
        return packets

    def _read_plain(self, budget: int) -> list[bytes]:
        read = os.read
        fd = self.fd
        packets: list[bytes] = []
        while len(packets) < budget:
            try:
                packet = read(fd, PLAIN_READ_BYTES)
            except BlockingIOError:
                break
            if packet:
                packets.append(packet)
        return packets


class VnetTunWriter(TunWriter):
    """A :class:`TunWriter` for a vnet TUN. Consecutive segments of one TCP flow are joined
    (``protocol.tcp_coalesce``) and written as one super-packet that the stack takes whole
    (``GSO_TCPV4/6`` with ``NEEDS_CSUM``), and so are consecutive datagrams of one UDP flow
    (``protocol.udp_coalesce``, ``GSO_UDP_L4``); everything else goes behind a header of zeros
    and the kernel checks its checksums. ``coalesce`` (TCP) and ``coalesce_udp`` turn False for
    good, each on its own, if the kernel refuses such a super-packet (``GSO_UDP_L4`` needs Linux
    6.2); ``super_writes`` counts the joined writes. ``written`` counts IP packets.
    """

    __slots__ = ("coalesce", "coalesce_udp", "super_writes")

    def __init__(self, fd: int, drops: DropCounters, *, coalesce: bool = True) -> None:
        super().__init__(fd, drops)
        self.coalesce = coalesce
        self.coalesce_udp = coalesce
        self.super_writes = 0

    def write(self, packet: bytes) -> None:
        self.write_all([packet])

    def write_all(self, packets: list[bytes], partial: bool = False) -> None:
        if len(packets) == 1 or not (self.coalesce or self.coalesce_udp):
            self._write_plain(packets, partial)
            return
        tcp: list[bytes | TcpRun] = coalesce(packets) if self.coalesce else list(packets)
        items = coalesce_udp(tcp) if self.coalesce_udp else tcp
        writev = os.writev
        fd = self.fd
        counts = self.drops.counts
        written = 0
        for item in items:
            if type(item) is bytes:
                l4 = partial_tcp(item) if partial else 0
                try:
                    writev(fd, (_PARTIAL_HEADERS.get(l4) or _partial_header(l4), item))
                except BlockingIOError:
                    counts[DropReason.QUEUE_FULL] += 1
                except OSError:
                    counts[DropReason.SEND_FAILED] += 1
                else:
                    written += 1
                continue
            assert isinstance(item, GsoRun)
            try:
                writev(fd, [_run_header(item), item.header, *item.payloads])
            except BlockingIOError:
                counts[DropReason.QUEUE_FULL] += len(item.payloads)
            except OSError as exc:
                what = "TCP" if isinstance(item, TcpRun) else "UDP"
                log.warning(
                    "TUN refused a coalesced %s write (%s): writing its packets one by one",
                    what,
                    exc,
                )
                if isinstance(item, TcpRun):
                    self.coalesce = False
                else:
                    self.coalesce_udp = False
                self.written += written
                self._write_plain(item.packets, partial)
                written = 0
            else:
                written += len(item.payloads)
                self.super_writes += 1
        self.written += written

    def _write_plain(self, packets: list[bytes], partial: bool) -> None:
        writev = os.writev
        fd = self.fd
        counts = self.drops.counts
        written = 0
        for packet in packets:
            l4 = partial_tcp(packet) if partial else 0
            try:
                writev(fd, (_PARTIAL_HEADERS.get(l4) or _partial_header(l4), packet))
            except BlockingIOError:
                counts[DropReason.QUEUE_FULL] += 1
            except OSError:
                counts[DropReason.SEND_FAILED] += 1
            else:
                written += 1
        self.written += written


def _run_header(run: GsoRun) -> bytes:
    """The vnet header of a coalesced write: the stack finishes every segment's checksum."""
    if isinstance(run, TcpRun):
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6 if run.ipv6 else VIRTIO_NET_HDR_GSO_TCPV4
        check_offset = TCP_CHECK_OFFSET
    else:
        gso_type, check_offset = VIRTIO_NET_HDR_GSO_UDP_L4, UDP_CHECK_OFFSET
    return VIRTIO_NET_HDR.pack(
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        len(run.header),
        run.segment_size,
        run.l4_offset,
        check_offset,
    )


def tun_writer(fd: int, drops: DropCounters) -> TunWriter:
    """The writer that fits TUN ``fd``: with a vnet header or without."""
    return VnetTunWriter(fd, drops) if has_vnet_header(fd) else TunWriter(fd, drops)
