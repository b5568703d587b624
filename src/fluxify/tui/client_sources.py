"""What the client TUI lists: candidate uplink interfaces and the client certificates it can use.

Interfaces come from netlink; loopback, tunnels, bridges, container and Fluxify's own devices are
hidden (veth stays: the namespace lab's uplinks are veth). An interface is selectable only when it
is up and has a default gateway (SPEC §7).
"""

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fluxify.errors import FluxifyError
from fluxify.pki.client_material import load_client_material
from fluxify.pki.files import CA_CERT_FILE, KEY_SUFFIX, SERVER_CERT_FILE, SERVER_KEY_FILE

HIDDEN_KINDS = frozenset(
    {"tun", "tap", "bridge", "dummy", "wireguard", "vxlan", "gre", "ipip", "sit", "bond", "ifb"}
)
HIDDEN_PREFIXES = ("lo", "tun", "tap", "docker", "br-", "virbr", "fluxify", "wg", "vnet")
_NOT_CLIENT_FILES = frozenset({CA_CERT_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE, "ca-key.pem"})


@dataclass(frozen=True)
class InterfaceInfo:
    """One row of the interface list."""

    name: str
    up: bool
    address: str | None  # the first IPv4 (or IPv6) address, for display
    gateway: str | None

    @property
    def selectable(self) -> bool:
        return self.up and self.gateway is not None

    @property
    def problem(self) -> str:
        """Why it cannot be selected ("" when it can)."""
        if not self.up:
            return "down"
        return "" if self.gateway is not None else "no gateway"


InterfaceProvider = Callable[[], list[InterfaceInfo]]


def is_hidden(name: str, kind: str | None) -> bool:
    return kind in HIDDEN_KINDS or name.lower().startswith(HIDDEN_PREFIXES)


def discover_interfaces() -> list[InterfaceInfo]:
    """This host's candidate uplinks, sorted by name (blocking: call it from a thread)."""
    from fluxify.linux.netlink import Netlink  # noqa: PLC0415 - pyroute2 only when listing

    found = []
    with Netlink() as netlink:
        addresses: dict[str, list[str]] = {}
        for ifname, address in netlink.addresses():
            addresses.setdefault(ifname, []).append(address.partition("/")[0])
        for link in netlink.links():
            if is_hidden(link.ifname, link.kind):
                continue
            gateway = netlink.gateway_of(link.ifname, socket.AF_INET) or netlink.gateway_of(
                link.ifname, socket.AF_INET6
            )
            mine = sorted(addresses.get(link.ifname, []), key=lambda a: ":" in a)
            found.append(InterfaceInfo(link.ifname, link.up, mine[0] if mine else None, gateway))
    return sorted(found, key=lambda info: info.name)


@dataclass(frozen=True)
class CertChoice:
    """A client certificate in the client PKI dir; ``error`` says why it cannot be used."""

    name: str
    error: str = ""


def client_certificates(pki_dir: Path) -> list[CertChoice]:
    """Every ``<name>.pem`` there that could be a client certificate, checked by loading it."""
    try:
        stems = sorted(
            p.stem
            for p in pki_dir.glob("*.pem")
            if p.name not in _NOT_CLIENT_FILES and not p.stem.endswith(KEY_SUFFIX)
        )
    except OSError:
        return []
    choices = []
    for stem in stems:
        try:
            load_client_material(pki_dir, stem)
        except FluxifyError as exc:
            choices.append(CertChoice(stem, str(exc)))
        else:
            choices.append(CertChoice(stem))
    return choices
