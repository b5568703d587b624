"""The client's settings, as parsed from its command line (SPEC §6)."""

from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

DEFAULT_CONTROL_PORT = 8443
DEFAULT_CONNECTIONS = 2


class Mode(Enum):
    """What the client runs. ``TUI`` when no mode flag was given."""

    TUI = "tui"
    BONDING = "bonding"
    LOAD_BALANCE = "load-balance"


@dataclass(frozen=True)
class ServerAddress:
    """The control endpoint: a host (name or IP literal) and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ClientConfig:
    """Everything ``fluxify-client`` was asked to do.

    ``pki_dir`` None means the default (``~/.fluxify`` of the invoking user). ``explicit`` names
    the settings given on the command line: they win over stored settings (SPEC §4).
    """

    mode: Mode = Mode.TUI
    server: ServerAddress | None = None
    ifaces: tuple[str, ...] = ()
    backup_ifaces: tuple[str, ...] = ()  # of ``ifaces``: carry data only when the others can't
    protocol: str = "v2"  # -protocol v1: never offer extensions (comparisons, debugging)
    rekey_interval_s: float = 3600.0  # -rekey-interval: ask for a new key epoch this often
    source_ips: tuple[IPv4Address | IPv6Address, ...] = ()
    connections: int = DEFAULT_CONNECTIONS
    pki_dir: Path | None = None
    client_name: str = ""
    control_port: int = DEFAULT_CONTROL_PORT
    policy_routing: bool = False
    gateways: tuple[IPv4Address | IPv6Address, ...] = ()
    probe_targets: tuple[IPv4Address | IPv6Address, ...] = ()  # load-balance; () = defaults
    weights: tuple[int, ...] = ()  # load-balance nexthop weights by -ifaces position; () = 1 each
    tui_autostart: bool = False
    verbose: bool = False
    log_level: str = "info"  # -log-level; -v means "debug"
    metrics: tuple[str, int] | None = None  # -metrics host:port; None: no /metrics
    explicit: frozenset[str] = frozenset()
