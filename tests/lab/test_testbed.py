import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from fluxify.errors import HostError
from fluxify.lab.testbed import Testbed, build_testbed, list_namespaces

requires_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: builds network namespaces"
)
pytestmark = [pytest.mark.root, requires_root]

# Prints the source address of the first UDP datagram it receives.
UDP_ECHO_SOURCE = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999)); s.settimeout(10)
print(s.recvfrom(100)[1][0], flush=True)
"""
UDP_SEND_VIA = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, sys.argv[2].encode())
s.sendto(b"hello", (sys.argv[1], 9999))
"""


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    with build_testbed(uplinks=2, prefix="fxt") as built:
        yield built


def test_client_reaches_the_server_through_each_isp(bed: Testbed) -> None:
    t = bed.topology
    for uplink in t.uplinks:
        assert bed.ping(t.client_ns, uplink.gateway_v4)
        assert bed.ping(t.client_ns, uplink.gateway_v6)
        assert bed.ping(t.client_ns, t.server_v4.ip, interface=uplink.ifname)
        assert bed.ping(t.client_ns, t.server_v6.ip, interface=uplink.ifname)


def test_server_reaches_the_internet_host(bed: Testbed) -> None:
    t = bed.topology
    assert bed.ping(t.server_ns, t.internet_host_v4.ip)
    assert bed.ping(t.server_ns, t.internet_host_v6.ip)
    assert not bed.ping(t.client_ns, t.internet_host_v4.ip, timeout_s=1)  # only via a tunnel


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_isp_routers_nat_like_home_routers(bed: Testbed, family: str) -> None:
    t = bed.topology
    server = t.server_v4.ip if family == "v4" else t.server_v6.ip
    for uplink in t.uplinks:
        listener = bed.spawn(
            t.server_ns,
            [sys.executable, "-c", UDP_ECHO_SOURCE, str(server)],
            stdout=subprocess.PIPE,
            text=True,
        )
        # Bounded wait until the listener is bound, then send through this uplink.
        for _ in range(50):
            listening = bed.run(t.server_ns, ["ss", "-Hnul", "sport = :9999"]).stdout.strip()
            if listening:
                break
            time.sleep(0.05)
        bed.run(t.client_ns, [sys.executable, "-c", UDP_SEND_VIA, str(server), uplink.ifname])
        seen, _ = listener.communicate(timeout=15)
        public = uplink.isp_public_v4.ip if family == "v4" else uplink.isp_public_v6.ip
        assert seen.strip() == str(public)


def test_counters_link_state_and_shaping(bed: Testbed) -> None:
    t = bed.topology
    before = bed.counters(t.client_ns, "wan2")
    assert bed.ping(t.client_ns, t.server_v4.ip, interface="wan2", count=3)
    after = bed.counters(t.client_ns, "wan2")
    assert after.tx_packets >= before.tx_packets + 3
    assert after.rx_bytes > before.rx_bytes
    bed.set_uplink(2, up=False)
    assert not bed.ping(t.client_ns, t.server_v4.ip, interface="wan2", timeout_s=1)
    bed.set_uplink(2, up=True)
    assert bed.ping(t.client_ns, t.server_v4.ip, interface="wan2", count=1, timeout_s=5)
    bed.shape_uplink(1, rate_mbit=20)
    qdisc = bed.run(t.client_ns, ["tc", "qdisc", "show", "dev", "wan1"]).stdout
    assert "tbf" in qdisc and "20Mbit" in qdisc
    bed.unshape(t.client_ns, "wan1")
    assert "tbf" not in bed.run(t.client_ns, ["tc", "qdisc", "show", "dev", "wan1"]).stdout


def test_random_loss_on_an_isp_link(bed: Testbed) -> None:
    t = bed.topology
    isp = t.uplink(1).isp_ns
    bed.set_loss(isp, ["lan"], 100)
    try:
        assert not bed.ping(t.client_ns, t.server_v4.ip, interface="wan1", timeout_s=1)
    finally:
        bed.set_loss(isp, ["lan"], 0)
    assert bed.ping(t.client_ns, t.server_v4.ip, interface="wan1")


def test_helpers_refuse_namespaces_outside_the_bed(bed: Testbed) -> None:
    with pytest.raises(HostError, match="not part of test bed"):
        bed.run("some-other-namespace", ["true"])


def test_teardown_removes_everything_even_after_an_exception() -> None:
    before = set(list_namespaces())
    with pytest.raises(RuntimeError), build_testbed(uplinks=1, prefix="fxt") as built:
        sleeper = built.spawn(built.topology.server_ns, ["sleep", "60"])
        # A process started in the bed by other means: teardown finds it by namespace.
        built.run(built.topology.client_ns, ["sh", "-c", "sleep 60 >/dev/null 2>&1 &"])
        assert set(built.topology.namespaces) <= set(list_namespaces())
        raise RuntimeError("a test failed inside the bed")
    assert sleeper.poll() is not None
    assert set(list_namespaces()) == before
