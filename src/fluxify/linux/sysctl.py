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
    """``net.ipv4.ip_forward`` → ``/proc/sys/net/ipv4/ip_forward``, as sysctl(8) reads names.

    Two notations: with slashes (``net/ipv4/conf/eth0.100/rp_filter``) a dot is part of a name;
    with dots (``net.ipv4.conf.eth0/100.rp_filter``) a slash stands for a dot in a name. The
    separator that comes first says which one a name uses.
    """
    return PROC_SYS / sysctl_relative(name)


def sysctl_relative(name: str) -> str:
    """``name`` in slash notation (``net/ipv4/conf/eth0.100/rp_filter``), checked."""
    dot, slash = name.find("."), name.find("/")
    if slash != -1 and (dot == -1 or slash < dot):
        parts = name.split("/")
    else:
        parts = [part.replace("/", ".") for part in name.split(".")]
    if not all(parts) or any(part in {".", ".."} for part in parts):
        raise HostError(f"Sysctl name {name!r} is not a kernel parameter name.")
    return "/".join(parts)


def rp_filter_name(ifname: str) -> str:
    """The IPv4 reverse-path filter parameter of ``ifname``, right for names with dots."""
    return f"net/ipv4/conf/{ifname}/rp_filter"


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
