"""Stand-ins for the client TUI's outside world: interfaces, a PKI dir, runners, stats files."""

import asyncio
import contextlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from fluxify.client.config import ClientConfig, Mode
from fluxify.client.elevation import Elevator
from fluxify.client.settings import StoredSettings
from fluxify.pki.authority import ensure_server_pki, issue_client
from fluxify.tui.client_app import ClientApp
from fluxify.tui.client_run import ClientTuiDeps
from fluxify.tui.client_sources import InterfaceInfo

SIZE = (130, 50)
INTERFACES = [
    InterfaceInfo("eth0", True, "192.0.2.10", "192.0.2.1"),
    InterfaceInfo("eth1", True, "198.51.100.10", "198.51.100.1"),
    InterfaceInfo("eth2", True, "203.0.113.10", None),  # no gateway: not selectable
    InterfaceInfo("wlan0", True, "10.1.0.5", "10.1.0.1"),
]


def client_pki(root: Path, *names: str) -> Path:
    """A client PKI dir holding the server-made bundle of each name."""
    layout = ensure_server_pki(root / "server-pki", None).layout
    pki = root / "client-pki"
    pki.mkdir()
    for name in names:
        pki.joinpath(f"{name}.pem").write_bytes(issue_client(layout, name).bundle.read_bytes())
    return pki


@dataclass
class FakeRunner:
    """Writes a bonding stats file each 0.1 s until stopped; records the undo."""

    config: ClientConfig
    mode: Mode
    state_dir: Path
    fail: str = ""
    started: bool = False
    torn_down: bool = False

    async def run(self, stop: asyncio.Event) -> None:
        self.started = True
        if self.fail:
            raise RuntimeError(self.fail)
        try:
            tx = 0
            while not stop.is_set():
                tx += 125_000
                write_bonding_stats(
                    self.state_dir, list(self.config.ifaces), tx, self.config.backup_ifaces
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)
            await asyncio.sleep(0.05)  # an undo takes a moment
        finally:
            self.torn_down = True


@dataclass
class Runners:
    """A runner factory that remembers what it made."""

    fail: str = ""
    made: list[FakeRunner] = field(default_factory=list)

    def __call__(self, config: ClientConfig, mode: Mode, pki: Path, state: Path) -> FakeRunner:
        runner = FakeRunner(config, mode, state, self.fail)
        self.made.append(runner)
        return runner


def write_bonding_stats(
    state_dir: Path, labels: list[str], tx_bytes: int, backup: tuple[str, ...] = ()
) -> None:
    body = {
        "session_id": 0x1234ABCD,
        "client_ip": "10.8.0.2",
        "client_ip6": None,
        "reconnects": 0,
        "paths": [
            {
                "label": label,
                "alive": i == 0,
                "priority": "backup" if label in backup else "primary",
                "rtt_ms": 12.5 + i,
                "weight": 1.0,
                "idle_s": 0.1,
                "tx_packets": 10,
                "tx_bytes": tx_bytes,
                "rx_packets": 9,
                "rx_bytes": tx_bytes // 2,
            }
            for i, label in enumerate(labels)
        ],
        "drops": {},
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / "client-stats.tmp"
    tmp.write_text(json.dumps(body))
    tmp.replace(state_dir / "client-stats.json")


def make_client_app(
    tmp_path: Path,
    config: ClientConfig | None = None,
    *,
    stored: StoredSettings | None = None,
    root: bool = True,
    runners: Runners | None = None,
    interfaces: list[InterfaceInfo] | None = None,
    certs: tuple[str, ...] = ("alice",),
) -> ClientApp:
    pki = client_pki(tmp_path, *certs)
    config = config or ClientConfig()
    if config.pki_dir is None:
        config = replace(config, pki_dir=pki)
    deps = ClientTuiDeps(
        state_dir=tmp_path / "state",
        settings_file=tmp_path / "home" / ".fluxify" / "config.json",
        interfaces=lambda: list(INTERFACES if interfaces is None else interfaces),
        runner_factory=runners or Runners(),
        is_root=lambda: root,
        find_elevator=lambda: Elevator("/usr/bin/pkexec"),
        original_args=("-v",),
    )
    return ClientApp(config, stored or StoredSettings(), deps)
