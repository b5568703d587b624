"""Many datagrams per system call: ``sendmmsg(2)`` over a fixed ring of payloads (lab flooder).

Python has no ``sendmmsg``; a flooder calling ``send`` once per datagram spends ~10 µs of its
own CPU on each, on a box whose cores the server under test shares. Here the ring's message
headers are built once and each call hands the kernel up to ``batch`` of them, so the flooder
costs little more than the kernel's own work per datagram. Every datagram stays a datagram of
its own size (unlike UDP GSO, which the receiver's GRO would hand over as one buffer).
Linux only.
"""

import ctypes
import errno
import os
import socket
from collections.abc import Sequence

MAX_BATCH = 1024  # UIO_MAXIOV: the most messages one sendmmsg takes


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("length", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_IoVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("hdr", _MsgHdr), ("length", ctypes.c_uint))


_libc = ctypes.CDLL(None, use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
_sendmmsg.restype = ctypes.c_int
_RETRY_ERRNOS = frozenset({errno.EAGAIN, errno.ECONNREFUSED, errno.ENOBUFS, errno.EINTR})


class RingSender:
    """Sends ``payloads`` in turn, over and over, on a connected datagram socket.

    ``send(count)`` sends up to ``count`` (at most ``MAX_BATCH``) of the next ones in one
    system call and returns how many left; ``sent`` counts them all, so datagram ``i`` of the
    run was ``payloads[i % len(payloads)]``.
    """

    def __init__(self, sock: socket.socket, payloads: Sequence[bytes]) -> None:
        if not payloads:
            raise ValueError("nothing to send")
        self._fd = sock.fileno()
        self._buffers = [ctypes.create_string_buffer(p, len(p)) for p in payloads]
        count = len(payloads)
        self._iovs = (_IoVec * count)()
        self._msgs = (_MMsgHdr * count)()
        for index, buffer in enumerate(self._buffers):
            self._iovs[index].base = ctypes.addressof(buffer)
            self._iovs[index].length = len(payloads[index])
            hdr = self._msgs[index].hdr
            hdr.iov = ctypes.pointer(self._iovs[index])
            hdr.iovlen = 1
        self._base = ctypes.addressof(self._msgs)
        self._size = ctypes.sizeof(_MMsgHdr)
        self._count = count
        self._next = 0
        self.sent = 0

    def send(self, count: int) -> int:
        count = min(count, MAX_BATCH, self._count - self._next)
        done = _sendmmsg(self._fd, self._base + self._next * self._size, count, 0)
        if done < 0:
            code = ctypes.get_errno()
            if code in _RETRY_ERRNOS:
                return 0
            raise OSError(code, os.strerror(code))
        self._next = (self._next + done) % self._count
        self.sent += done
        return int(done)
