"""The server's settings, as parsed from its command line (SPEC §6)."""

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_UDP_PORT = 8000
DEFAULT_CONTROL_PORT = 8443
DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``fluxify-server`` was asked to do. ``tun_name`` "" lets the kernel pick.

    ``new_client`` and ``revoke`` name a client to issue or revoke headlessly, then exit;
    ``reissue`` lets ``new_client`` replace a certificate the name already has.
    """

    udp_port: int = DEFAULT_UDP_PORT
    control_port: int = DEFAULT_CONTROL_PORT
    tun_name: str = ""
    pki_dir: Path = Path("pki")
    regenerate: bool = False
    hosts: tuple[str, ...] = DEFAULT_HOSTS
    tui: bool = False
    new_client: str | None = None
    reissue: bool = False
    revoke: str | None = None
    verbose: bool = False
    log_level: str = "info"  # -log-level; -v means "debug"
    metrics: tuple[str, int] | None = None  # -metrics host:port; None: no /metrics
    protocol: str = "v2"  # -protocol v1: accept no extension (a server as the original)
    rekey_interval_s: float = 3600.0  # -rekey-interval: a new key epoch at least this often
    extra: dict[str, str] = field(default_factory=dict)
