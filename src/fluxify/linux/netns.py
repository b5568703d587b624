"""Run host calls inside a named network namespace from one dedicated thread.

Why a thread: ``setns(CLONE_NEWNET)`` is per thread, and pyroute2's synchronous ``IPRoute``
runs its own event loop, so it must never be called from a thread that already runs asyncio.
"""

import ctypes
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from fluxify.errors import HostError

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into the network namespace ``/run/netns/<name>``."""
    path = NETNS_DIR / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise HostError(f"Network namespace {name!r} does not exist ({exc.strerror}).") from exc
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise HostError(f"Cannot enter network namespace {name!r}: {os.strerror(err)}.")
    finally:
        os.close(fd)


class NetnsThread:
    """One worker thread living in ``netns`` (``None``: the caller's own namespace).

    ``call(fn, *args)`` runs ``fn`` on that thread and returns its result; calls are serialized.
    Processes spawned from ``fn`` inherit the namespace. Safe to call from any thread, including
    one running an asyncio loop (the call blocks briefly).
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._ready = threading.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{netns or 'self'}"
        )
        if netns is not None:
            # Enter once, eagerly, so a missing namespace fails here and not on first use.
            self._executor.submit(enter_netns, netns).result()

    def call(self, fn: Callable[..., T], *args: object) -> T:
        return self._executor.submit(fn, *args).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> "NetnsThread":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
