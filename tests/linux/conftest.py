"""Throwaway network namespaces for host-edge tests (root only)."""

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest

requires_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: creates network namespaces, TUN devices, nftables"
)
F = TypeVar("F", bound=Callable[..., object])


def needs_root(test: F) -> F:
    """Mark ``test`` ``root`` (``-m "not root"`` leaves it out) and skip it without root.

    Per test, not per module: the pure tests beside it then run everywhere.
    """
    return pytest.mark.root(requires_root(test))  # type: ignore[no-any-return]


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@contextmanager
def throwaway_netns(prefix: str) -> Iterator[str]:
    """A fresh, empty network namespace ``<prefix>-<random>`` with ``lo`` up; deleted afterwards
    whatever happens. Each test module passes its own prefix."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    with throwaway_netns("fxt") as name:
        yield name


@pytest.fixture
def uplink_netns(netns: str) -> str:
    """``netns`` plus a veth pair ``wan0``/``peer0`` holding addresses and default routes."""
    ip("-n", netns, "link", "add", "wan0", "type", "veth", "peer", "name", "peer0")
    ip("-n", netns, "link", "set", "wan0", "up")
    ip("-n", netns, "link", "set", "peer0", "up")
    ip("-n", netns, "addr", "add", "192.0.2.2/24", "dev", "wan0")
    ip("-n", netns, "addr", "add", "2001:db8:5::2/64", "dev", "wan0", "nodad")
    ip("-n", netns, "route", "add", "default", "via", "192.0.2.1", "dev", "wan0", "metric", "100")
    ip("-n", netns, "-6", "route", "add", "default", "via", "2001:db8:5::1", "dev", "wan0")
    return netns
