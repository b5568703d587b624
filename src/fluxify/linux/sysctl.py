"""Read and write kernel parameters under ``/proc/sys`` (forwarding, rp_filter, ...).

Journaled writes with their restore go through ``linux.journal``.
"""

from collections.abc import Callable
from pathlib import Path

from fluxify.errors import HostError
from fluxify.linux.netlink import NotFoundError
from fluxify.linux.netns import NetnsThread

PROC_SYS = Path("/proc/sys")
IPV4_FORWARD = "net.ipv4.ip_forward"
IPV6_FORWARD = "net.ipv6.conf.all.forwarding"


def sysctl_path(name: str) -> Path:
    """``net.ipv4.ip_forward`` → ``/proc/sys/net/ipv4/ip_forward``.

    Names holding an interface with dots (``eth0.100``) must be written with slashes instead.
    """
    relative = name if "/" in name else name.replace(".", "/")
    path = PROC_SYS / relative
    if ".." in path.parts:
        raise HostError(f"Sysctl name {name!r} is not a kernel parameter name.")
    return path


def read_sysctl(name: str, netns: str | None = None) -> str:
    """The current value of ``name``, stripped of its trailing newline."""
    return _in(netns, _read, name)


def write_sysctl(name: str, value: str, netns: str | None = None) -> None:
    _in(netns, _write, name, value)


def _read(name: str) -> str:
    try:
        return sysctl_path(name).read_text().strip()
    except FileNotFoundError as exc:
        raise NotFoundError(f"There is no kernel parameter {name}.") from exc
    except OSError as exc:
        raise HostError(f"Cannot read kernel parameter {name}: {exc.strerror}.") from exc


def _write(name: str, value: str) -> str:
    try:
        sysctl_path(name).write_text(value + "\n")
    except FileNotFoundError as exc:
        raise NotFoundError(f"There is no kernel parameter {name}.") from exc
    except OSError as exc:
        raise HostError(f"Cannot set kernel parameter {name} to {value}: {exc.strerror}.") from exc
    return value


def _in(netns: str | None, fn: Callable[..., str], *args: str) -> str:
    if netns is None:
        return fn(*args)
    # /proc/sys/net shows the namespace of the thread that opens it.
    with NetnsThread(netns) as thread:
        return thread.call(fn, *args)
