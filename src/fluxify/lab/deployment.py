"""A bonding deployment in a namespace test bed: PKI, a server and clients, as real processes.

The processes are the installed ``fluxify-server`` and ``fluxify-client`` started with
``ip netns exec``, each with its own journal directory (``FLUXIFY_STATE_DIR``). Leaving
:func:`deployment` stops every process and deletes every namespace, whatever happened. The
lab benchmarks and the end-to-end tests both stand on it.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxify.errors import HostError
from fluxify.event_loop import EVENT_LOOP_ENV
from fluxify.lab.testbed import Testbed, build_testbed
from fluxify.lab.topology import Topology
from fluxify.linux.read_moderation import NO_MODERATION_ENV
from fluxify.linux.statefiles import STATE_DIR_ENV
from fluxify.linux.tun_offload import TSO_ENV
from fluxify.linux.udp_offload import NO_OFFLOAD_ENV

# The programs' debugging switches: set for the lab or the bench, they reach every process it
# starts (nothing else of the caller's environment does)
DEBUG_SWITCHES = (NO_OFFLOAD_ENV, TSO_ENV, EVENT_LOOP_ENV, NO_MODERATION_ENV)
PROGRAM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def program_env(state: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a program the lab starts: PATH, its own state directory and those of
    ``DEBUG_SWITCHES`` set in ``environ``."""
    env = {name: environ[name] for name in DEBUG_SWITCHES if name in environ}
    env.update({"PATH": PROGRAM_PATH, STATE_DIR_ENV: str(state)})
    return env


BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 20.0


def wait_until(
    what: str, predicate: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise HostError(f"timed out after {timeout_s:g} s waiting for {what}")


@dataclass
class Deployment:
    bed: Testbed
    workdir: Path
    server: subprocess.Popen[Any] | None = None
    clients: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)

    @property
    def t(self) -> Topology:
        return self.bed.topology

    # server ----------------------------------------------------------------------------------

    def issue(self, name: str) -> Path:
        """Issue ``name``'s certificate headlessly; return the client's PKI dir with the bundle."""
        subprocess.run(
            [
                BIN / "fluxify-server",
                "-pki",
                self.workdir / "pki",
                "-hosts",
                str(self.t.server_v4.ip),
                "-new-client",
                name,
            ],
            check=True,
            capture_output=True,
        )
        client_pki = self.workdir / f"client-{name}"
        client_pki.mkdir(exist_ok=True)
        shutil.copy(self.workdir / "pki" / "clients" / "bundles" / f"{name}.pem", client_pki)
        return client_pki

    def start_server(self, extra_args: tuple[str, ...] = ()) -> None:
        """Start ``fluxify-server`` in the server namespace, ``extra_args`` added to its flags."""
        state = self.workdir / "server-state"
        (state / "server-stats.json").unlink(missing_ok=True)
        self.server = self._spawn(
            self.t.server_ns,
            [
                BIN / "fluxify-server",
                "-pki",
                self.workdir / "pki",
                "-hosts",
                str(self.t.server_v4.ip),
                *extra_args,
            ],
            state,
            "server.log",
        )
        wait_until("the server's first stats", (state / "server-stats.json").exists)

    def stop_server(self, sig: int = signal.SIGTERM) -> int:
        assert self.server is not None
        return _stop(self.server, sig)

    def server_stats(self) -> dict[str, Any]:
        return _read_json(self.workdir / "server-state" / "server-stats.json")

    # clients -----------------------------------------------------------------------------------

    def client_state(self, name: str) -> Path:
        return self.workdir / f"client-{name}-state"

    def start_client(
        self,
        name: str,
        netns: str | None = None,
        ifaces: str = "wan1,wan2",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        pki = self.workdir / f"client-{name}"
        state = self.client_state(name)
        (state / "client-stats.json").unlink(missing_ok=True)
        argv = [
            BIN / "fluxify-client",
            "-b",
            "-server",
            str(self.t.server_v4.ip),
            "-ifaces",
            ifaces,
            "-pki",
            pki,
            "-client",
            name,
            *extra_args,
        ]
        self.clients[name] = self._spawn(netns or self.t.client_ns, argv, state, f"{name}.log")
        wait_until(f"client {name}'s first stats", (state / "client-stats.json").exists)

    def stop_client(self, name: str, sig: int = signal.SIGTERM) -> int:
        return _stop(self.clients.pop(name), sig)

    def client_stats(self, name: str) -> dict[str, Any]:
        return _read_json(self.client_state(name) / "client-stats.json")

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text() if path.exists() else ""

    def _spawn(
        self, netns: str, argv: list[Any], state: Path, log_name: str
    ) -> subprocess.Popen[Any]:
        env = program_env(state, os.environ)
        log = (self.workdir / log_name).open("a")
        return self.bed.spawn(
            netns, [str(a) for a in argv], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    # traffic -----------------------------------------------------------------------------------

    def ping_internet(self, netns: str | None = None, v6: bool = False, count: int = 1) -> bool:
        target = self.t.internet_host_v6.ip if v6 else self.t.internet_host_v4.ip
        return self.bed.ping(netns or self.t.client_ns, target, count=count, timeout_s=2)

    def transfer(
        self, size: int, *, during: Callable[[], None] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Upload ``size`` bytes from the client namespace to the internet host through the tunnel.

        ``during`` runs while the transfer is in flight. Returns (sender, receiver) reports.
        """
        port = 5201
        module = [sys.executable, "-m", "fluxify.lab.transfer"]
        receiver = self.bed.spawn(
            self.t.internet_ns,
            [*module, "receive", "--port", str(port), "--timeout", "90"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert receiver.stdout is not None
        assert "listening" in receiver.stdout.readline()
        sender = self.bed.spawn(
            self.t.client_ns,
            [
                *module,
                "send",
                "--host",
                str(self.t.internet_host_v4.ip),
                "--port",
                str(port),
                "--bytes",
                str(size),
                "--timeout",
                "90",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        if during is not None:
            during()
        sent_out, _ = sender.communicate(timeout=120)
        received_out, _ = receiver.communicate(timeout=30)
        return json.loads(sent_out.strip().splitlines()[-1]), json.loads(
            received_out.strip().splitlines()[-1]
        )


def _stop(process: subprocess.Popen[Any], sig: int) -> int:
    process.send_signal(sig)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        raise HostError("process did not stop within 20 s of the signal") from None


def _read_json(path: Path) -> dict[str, Any]:
    for _ in range(20):  # the writer replaces the file atomically; a read can race a rename
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        time.sleep(0.05)
    raise HostError(f"no readable stats at {path}")


@contextlib.contextmanager
def deployment(workdir: Path, *, uplinks: int = 2, prefix: str = "fxb") -> Iterator[Deployment]:
    with build_testbed(uplinks, prefix=prefix) as bed:
        dep = Deployment(bed, workdir)
        try:
            yield dep
        except BaseException:
            for name in ("server.log", *(f"{c}.log" for c in dep.clients)):
                print(f"---- {name}\n{dep.log(name)[-4000:]}")
            raise
