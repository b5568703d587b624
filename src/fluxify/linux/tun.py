"""The TUN device: ``/dev/net/tun`` opened non-blocking with ``TUNSETIFF`` (IFF_TUN|IFF_NO_PI).

The device is not persistent: closing the descriptor (or the process dying) removes it.
"""

import fcntl
import os
import struct

from fluxify.errors import HostError
from fluxify.linux.netns import NetnsThread

TUN_CLONE_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
IFNAMSIZ = 16
# struct ifreq: 16-byte name, u16 flags, padded to 40 bytes.
_IFREQ = struct.Struct("16sH22x")


class Tun:
    """An open TUN device: ``fd`` reads and writes whole IP packets (no packet-info prefix).

    ``name`` is the device's actual name (the kernel picks ``tunN`` when none was asked for).
    ``fd`` is non-blocking; reads raise ``BlockingIOError`` when drained.
    """

    def __init__(self, fd: int, name: str, flags: int) -> None:
        self.fd = fd
        self.name = name
        self.flags = flags

    @classmethod
    def open(cls, name: str = "", *, extra_flags: int = 0, netns: str | None = None) -> "Tun":
        """Create the TUN device ``name`` ("" = kernel-named), in ``netns`` if given.

        ``extra_flags`` is or-ed into IFF_TUN|IFF_NO_PI, e.g. IFF_VNET_HDR for offloads later.
        """
        if len(name.encode()) >= IFNAMSIZ:
            raise HostError(f"TUN name {name!r} is too long: at most {IFNAMSIZ - 1} bytes.")
        flags = IFF_TUN | IFF_NO_PI | extra_flags
        if netns is None:
            return cls._create(name, flags)
        # The kernel creates the device in the namespace of the thread that opens the clone
        # device, so open it from a thread inside that namespace.
        with NetnsThread(netns) as thread:
            return thread.call(cls._create, name, flags)

    @classmethod
    def _create(cls, name: str, flags: int) -> "Tun":
        try:
            fd = os.open(TUN_CLONE_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise HostError(
                f"Cannot open {TUN_CLONE_PATH} ({exc.strerror}); "
                "is the tun module loaded and are you root?"
            ) from exc
        try:
            answer = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
        except OSError as exc:
            os.close(fd)
            raise HostError(
                f"Cannot create TUN device {name or '(kernel-named)'}: {exc.strerror}."
            ) from exc
        raw_name, _ = _IFREQ.unpack(answer)
        return cls(fd, raw_name.rstrip(b"\0").decode(), flags)

    def set_offload(self, offload_flags: int) -> None:
        """Enable TUN_F_* offloads (needs IFF_VNET_HDR at open)."""
        try:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, offload_flags)
        except OSError as exc:
            raise HostError(f"Cannot set offloads on {self.name}: {exc.strerror}.") from exc

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        """Close the descriptor; the kernel removes the device. Closing twice is harmless."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Tun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
