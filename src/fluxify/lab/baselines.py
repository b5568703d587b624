"""The comparison VPNs of the lab benchmarks: OpenVPN and wireguard-go, from Debian packages.

Each baseline is a point-to-point tunnel from the client namespace (over its preferred uplink,
``wan1``) to the server namespace, up only inside :func:`baseline_tunnel`. Measurements end at
the server's tunnel address. OpenVPN runs in TLS peer-to-peer mode with AES-256-GCM and
certificates from Fluxify's own PKI (ECDSA P-256, ``--dh none``), in user space (no DCO).
wireguard-go runs in the foreground as a test-bed process, configured with ``wg`` and ``ip``.
"""

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fluxify.lab.deployment import Deployment, wait_until
from fluxify.pki.authority import ensure_server_pki, issue_client

OPENVPN = "openvpn"
WIREGUARD = "wireguard-go"
BASELINES = (OPENVPN, WIREGUARD)
PACKAGES = ("openvpn", "wireguard-go", "wireguard-tools")
COMMANDS = {OPENVPN: ("openvpn",), WIREGUARD: ("wireguard-go", "wg")}
APT_TIMEOUT_S = 600.0
UP_TIMEOUT_S = 20.0
OPENVPN_PORT = 1194
OPENVPN_NET = ("10.8.0.1", "10.8.0.2")  # server, client
WIREGUARD_PORT = 51820
WIREGUARD_NET = ("10.9.0.1", "10.9.0.2")
WIREGUARD_MTU = 1420


@dataclass(frozen=True)
class Tunnel:
    """A running baseline: where to reach the server through it, and its processes' pids."""

    name: str
    target: str  # the server's tunnel address, in the server namespace
    client_pid: int
    server_pid: int


def ensure_installed(*, install: bool) -> tuple[list[str], list[str]]:
    """The baselines usable here, and notes; installs the Debian packages if allowed and missing."""
    notes: list[str] = []
    if install and _missing(BASELINES):
        print(f"installing {' '.join(PACKAGES)} with apt-get for the baselines ...", flush=True)
        notes.append(f"installed {', '.join(PACKAGES)} with apt-get")
        try:
            subprocess.run(
                ["apt-get", "install", "-y", *PACKAGES],
                env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                capture_output=True,
                timeout=APT_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            notes.append(f"apt-get failed: {exc}")
    available = [name for name in BASELINES if not _missing((name,))]
    for name in BASELINES:
        if name not in available:
            notes.append(f"{name} unavailable (not installed): its rows are missing")
    return available, notes


def _missing(names: tuple[str, ...]) -> bool:
    return any(shutil.which(cmd) is None for name in names for cmd in COMMANDS[name])


@contextmanager
def baseline_tunnel(name: str, dep: Deployment) -> Iterator[Tunnel]:
    """Bring baseline ``name`` up between the client and the server namespace; down on leaving."""
    starter = _openvpn if name == OPENVPN else _wireguard
    processes: list[subprocess.Popen[Any]] = []
    try:
        tunnel = starter(dep, processes)
        wait_until(
            f"{name} to carry a ping",
            lambda: dep.bed.ping(dep.t.client_ns, tunnel.target, timeout_s=1),
            UP_TIMEOUT_S,
        )
        yield tunnel
    finally:
        for process in processes:
            _stop(process)


def _openvpn(dep: Deployment, processes: list[subprocess.Popen[Any]]) -> Tunnel:
    root = dep.workdir / "openvpn-pki"
    setup = ensure_server_pki(root, (str(dep.t.server_v4.ip),))
    client = issue_client(setup.layout, "openvpn-bench", reissue=True)
    common = ["openvpn", "--dev", "ovpn0", "--dev-type", "tun", "--proto", "udp"]
    common += ["--ca", str(setup.layout.ca_cert), "--data-ciphers", "AES-256-GCM"]
    common += ["--cipher", "AES-256-GCM", "--disable-dco", "--verb", "3", "--ping", "1"]
    server, peer = OPENVPN_NET
    server_argv = [*common, "--tls-server", "--dh", "none", "--port", str(OPENVPN_PORT)]
    server_argv += ["--cert", str(setup.layout.server_cert), "--key", str(setup.layout.server_key)]
    server_argv += ["--ifconfig", server, peer]
    client_argv = [*common, "--tls-client", "--nobind", "--remote", str(dep.t.server_v4.ip)]
    client_argv += ["--rport", str(OPENVPN_PORT), "--cert", str(client.cert), "--key"]
    client_argv += [str(client.key), "--ifconfig", peer, server]
    srv = _spawn(dep, dep.t.server_ns, server_argv, dep.workdir / "openvpn-server.log")
    processes.append(srv)
    cli = _spawn(dep, dep.t.client_ns, client_argv, dep.workdir / "openvpn-client.log")
    processes.append(cli)
    return Tunnel(OPENVPN, server, cli.pid, srv.pid)


def _wireguard(dep: Deployment, processes: list[subprocess.Popen[Any]]) -> Tunnel:
    # wireguard-go's control sockets live in the shared /var/run/wireguard: unique names.
    tag = dep.t.name[-4:]
    names = {dep.t.server_ns: f"wg{tag}s", dep.t.client_ns: f"wg{tag}c"}
    keys = {ns: X25519PrivateKey.generate() for ns in names}
    server, peer = WIREGUARD_NET
    pids: dict[str, int] = {}
    for ns, ifname in names.items():
        argv = ["wireguard-go", ifname]
        log = dep.workdir / f"{ifname}.log"
        process = _spawn(dep, ns, argv, log, extra_env={"WG_PROCESS_FOREGROUND": "1"})
        processes.append(process)
        pids[ns] = process.pid
        _wait_link(dep, ns, ifname)
    for ns, ifname in names.items():
        other = dep.t.client_ns if ns == dep.t.server_ns else dep.t.server_ns
        key_file = dep.workdir / f"{ifname}.key"
        key_file.write_text(_b64(keys[ns].private_bytes_raw()) + "\n")
        key_file.chmod(0o600)
        base = ["wg", "set", ifname, "private-key", str(key_file)]
        peer_key = _b64(keys[other].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        if ns == dep.t.server_ns:
            wg = [*base, "listen-port", str(WIREGUARD_PORT), "peer", peer_key]
            wg += ["allowed-ips", f"{peer}/32"]
            address = server
        else:
            wg = [*base, "peer", peer_key, "allowed-ips", f"{server}/32"]
            wg += [
                "persistent-keepalive",
                "1",
                "endpoint",
                f"{dep.t.server_v4.ip}:{WIREGUARD_PORT}",
            ]
            address = peer
        dep.bed.run(ns, wg)
        dep.bed.run(ns, ["ip", "address", "add", f"{address}/24", "dev", ifname])
        dep.bed.run(ns, ["ip", "link", "set", ifname, "mtu", str(WIREGUARD_MTU), "up"])
    return Tunnel(WIREGUARD, server, pids[dep.t.client_ns], pids[dep.t.server_ns])


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _wait_link(dep: Deployment, netns: str, ifname: str) -> None:
    def exists() -> bool:
        done = dep.bed.run(netns, ["ip", "link", "show", ifname], check=False)
        return done.returncode == 0

    wait_until(f"{ifname} in {netns}", exists, UP_TIMEOUT_S)


def _spawn(
    dep: Deployment,
    netns: str,
    argv: list[str],
    log: Path,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[Any]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(extra_env or {})}
    with log.open("a") as out:
        return dep.bed.spawn(netns, argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    time.sleep(0.1)  # let the kernel remove the tun device before the next tunnel
