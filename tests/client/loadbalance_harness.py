"""Test helpers for load-balance mode in namespaces: the bed, the client process, TCP traffic."""

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxify.lab.testbed import Testbed, build_testbed
from fluxify.lab.topology import Topology
from tests.client.bonding_harness import host_snapshot, wait_until

BIN = Path(sys.executable).parent
PORT = 5301
PROBE_TARGETS = "198.18.0.1,2001:db8::1"  # the server namespace, reachable through every ISP

# Accepts any number of connections (v4 and v6), reads each to EOF, answers "ok".
SINK = f"""
import socket, threading
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", {PORT})); s.listen(512)
print("listening", flush=True)
def drain(c):
    with c:
        while c.recv(65536):
            pass
        c.sendall(b"ok")
while True:
    c, _ = s.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
"""

# N sequential connections (each from a new source port), SIZE bytes each; prints how many
# completed.
FLOWS = f"""
import socket, sys
host, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for _ in range(n):
    try:
        with socket.create_connection((host, {PORT}), timeout=5) as c:
            c.sendall(b"x" * size)
            c.shutdown(socket.SHUT_WR)
            ok += c.recv(2) == b"ok"
    except OSError:
        pass
print(ok)
"""


@dataclass
class LbBed:
    bed: Testbed
    workdir: Path
    clients: list["subprocess.Popen[Any]"] = field(default_factory=list)

    @property
    def t(self) -> Topology:
        return self.bed.topology

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    @property
    def log_path(self) -> Path:
        return self.workdir / "client.log"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def spawn(self, ifaces: str = "wan1,wan2", *extra: str) -> "subprocess.Popen[Any]":
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "FLUXIFY_STATE_DIR": str(self.state)}
        argv = [str(BIN / "fluxify-client"), "-l", "-ifaces", ifaces, "-probe", PROBE_TARGETS]
        log = self.log_path.open("a")
        process = self.bed.spawn(
            self.t.client_ns, [*argv, *extra], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.clients.append(process)
        return process

    def start(self, ifaces: str = "wan1,wan2", *extra: str) -> "subprocess.Popen[Any]":
        """Start the client and wait until every uplink has answered a probe in each family."""
        (self.state / "loadbalance-stats.json").unlink(missing_ok=True)
        process = self.spawn(ifaces, *extra)

        def ready() -> bool:
            assert process.poll() is None, self.log()
            stats = self.stats()
            return stats is not None and all(
                probe["state"] == "up" and probe["received"] > 0
                for uplink in stats["uplinks"]
                for probe in uplink["probes"].values()
            )

        wait_until("every uplink answering its probes", ready)
        return process

    def stop(self, process: "subprocess.Popen[Any]", sig: int = signal.SIGTERM) -> int:
        process.send_signal(sig)
        return process.wait(timeout=20)

    def stats(self) -> dict[str, Any] | None:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            data: dict[str, Any] = json.loads((self.state / "loadbalance-stats.json").read_text())
            return data
        return None

    def route_devs(self, v6: bool = False) -> list[str]:
        """Interfaces of the load balancer's default route (v4 metric 0, v6 metric 1)."""
        argv = ["ip", "-j", *(["-6"] if v6 else []), "route", "show", "default"]
        wanted = 1 if v6 else 0
        for route in json.loads(self.bed.run(self.t.client_ns, argv).stdout):
            if route.get("metric", 0) == wanted:
                hops = route.get("nexthops") or [route]
                return sorted(hop["dev"] for hop in hops)
        return []

    def route_weights(self) -> dict[str, int]:
        argv = ["ip", "-j", "route", "show", "default"]
        for route in json.loads(self.bed.run(self.t.client_ns, argv).stdout):
            if route.get("metric", 0) == 0:
                return {hop["dev"]: hop.get("weight", 1) for hop in route.get("nexthops", [])}
        return {}

    def flows(self, count: int, size: int, v6: bool = False) -> int:
        """Open ``count`` TCP connections to the internet host; how many completed."""
        host = self.t.internet_host_v6.ip if v6 else self.t.internet_host_v4.ip
        done = self.bed.run(
            self.t.client_ns, [sys.executable, "-c", FLOWS, str(host), str(count), str(size)]
        )
        return int(done.stdout.strip())

    def tx_bytes(self) -> dict[str, int]:
        return {
            u.ifname: self.bed.counters(self.t.client_ns, u.ifname).tx_bytes for u in self.t.uplinks
        }

    def snapshot(self) -> dict[str, str]:
        snap = host_snapshot(self.bed, self.t.client_ns)
        hash_policies = ("net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy")
        snap["hash_policy"] = self.bed.run(self.t.client_ns, ["sysctl", *hash_policies]).stdout
        return snap


@contextlib.contextmanager
def lb_bed(workdir: Path, uplinks: int = 2) -> Iterator[LbBed]:
    """A test bed whose server namespace routes to the internet host, and a TCP sink there."""
    with build_testbed(uplinks, prefix="fxl") as bed:
        srv = bed.topology.server_ns
        bed.run(srv, ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
        for uplink in bed.topology.uplinks:
            # set_uplink() puts the ISP's LAN port down, which flushes its IPv6 addresses
            # unless told to keep them: the v6 gateway would never come back.
            keep = f"net.ipv6.conf.{uplink.isp_lan_ifname}.keep_addr_on_down=1"
            bed.run(uplink.isp_ns, ["sysctl", "-qw", keep])
        sink = bed.spawn(
            bed.topology.internet_ns,
            [sys.executable, "-c", SINK],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sink.stdout is not None and "listening" in sink.stdout.readline()
        lb = LbBed(bed, workdir)
        try:
            yield lb
        except BaseException:
            print(f"---- client.log\n{lb.log()[-6000:]}")
            raise
