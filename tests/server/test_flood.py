"""A flood at the server's UDP port from another address (issue 13) while a client transfers.

The real server and bonding client in the namespace lab; a second client home behind the same
ISPs floods at full rate (``lab.bench_flood``): garbage, the live session's datagrams with a
broken tag, and exact replays of the client's heartbeats, handshakes and feedback captured on
ISP 1's link. The transfer arrives intact, the replays get no answer and register no path, every
flood datagram is counted (by reason, by the kernel's flood filter beyond its source's rate, or
by the kernel when the socket was full), the server's memory stays flat and its log says nothing
per packet. The throughput ratio is measured by the lab benchmark's ``flood`` scenario, not here.
"""

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fluxify.lab.bench_flood import capture_client_datagrams, flood_report, start_flood
from fluxify.lab.deployment import Deployment, deployment, wait_until
from fluxify.lab.soak import proc_rss_kb
from fluxify.protocol.bond import UNKNOWN_SOURCE_BURST, UNKNOWN_SOURCE_PER_S
from tests.linux.conftest import requires_root

pytestmark = [pytest.mark.root, requires_root]

CLIENT = "alice"
FLOOD_SECONDS = 8.0
TRANSFER_BYTES = 30_000_000
RSS_GROWTH_MAX_KB = 30_000
WAIT_S = 60.0


def udp_receive_errors(dep: Deployment) -> int:
    """Datagrams the server namespace's kernel dropped for a full socket buffer."""
    done = dep.bed.run(dep.t.server_ns, ["cat", "/proc/net/snmp"])
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("Udp:")]
    header, values = rows[0], rows[1]
    return int(values[header.index("RcvbufErrors")])


def session_paths(dep: Deployment) -> list[str]:
    sessions = dep.server_stats()["sessions"]
    assert len(sessions) == 1
    return sorted(p["label"] for p in sessions[0]["paths"])


def total_drops(stats: dict[str, Any]) -> int:
    return sum(stats["drops"].values())


def test_a_flood_from_another_address_leaves_the_transfer_whole_and_the_server_quiet(
    tmp_path: Path,
) -> None:
    with deployment(tmp_path, uplinks=2, prefix="fxf") as dep:
        dep.issue(CLIENT)
        dep.start_server()
        dep.start_client(CLIENT)
        wait_until("the tunnel to carry a ping", dep.ping_internet, WAIT_S)
        flooder_ns = dep.bed.add_client_home()
        captured = tmp_path / "captured.b64"
        pings = dep.bed.spawn(
            dep.t.client_ns,
            ["ping", "-q", "-c", "30", "-i", "0.2", str(dep.t.internet_host_v4.ip)],
            stdout=subprocess.DEVNULL,
        )
        assert capture_client_datagrams(dep, captured) >= 4  # heartbeats at least
        pings.wait(timeout=30)
        wait_until("both paths at the server", lambda: len(session_paths(dep)) == 2, WAIT_S)
        paths_before = session_paths(dep)
        stats_before = dep.server_stats()
        kernel_before = udp_receive_errors(dep)
        assert dep.server is not None
        rss_before = proc_rss_kb(dep.server.pid)
        log_before = dep.log("server.log").splitlines()

        reports: list[dict[str, Any]] = []

        def flood_during_transfer() -> None:
            reports.append(flood_report(start_flood(dep, flooder_ns, captured, FLOOD_SECONDS)))

        sent, received = dep.transfer(TRANSFER_BYTES, during=flood_during_transfer)
        (flood,) = reports
        # the stats file is written once a second: wait until it has counted the whole flood
        counted: dict[str, int] = {}

        def flood_counted() -> bool:
            nonlocal counted
            stats = dep.server_stats()
            counted = {k: v - stats_before["drops"].get(k, 0) for k, v in stats["drops"].items()}
            kernel = udp_receive_errors(dep) - kernel_before
            return sum(counted.values()) + kernel >= flood["total"]

        time.sleep(1.5)
        wait_until("the flood counted", flood_counted, 10.0)
        rss_after = proc_rss_kb(dep.server.pid)
        paths_after = session_paths(dep)
        log_during = dep.log("server.log").splitlines()[len(log_before) :]

    print(f"flood {flood}; counted {counted}; server RSS {rss_before} -> {rss_after} kB")
    print(f"server log during the flood: {log_during}")
    assert received["bytes"] == sent["bytes"] == TRANSFER_BYTES
    assert received["sha256"] == sent["sha256"]
    assert flood["total"] > 10_000, flood  # a flood, not a trickle
    assert flood["answers"] == 0  # no echo, no probe, no feedback towards the replayer
    assert paths_after == paths_before  # the replayer's address became no path
    assert counted.get("unknown_session", 0) > 0  # the garbage
    assert counted.get("bad_tag", 0) + counted.get("unknown_source_budget", 0) > 0
    # the session's datagrams from the flooder's address got its small budget, 20/s
    # (burst 40), of attempts, however they were batched; the rest never reached the codec
    attempts = counted.get("bad_tag", 0) + counted.get("control_replay", 0)
    assert attempts <= UNKNOWN_SOURCE_PER_S * (FLOOD_SECONDS + 10) + UNKNOWN_SOURCE_BURST, counted
    assert rss_after - rss_before < RSS_GROWTH_MAX_KB, (rss_before, rss_after)
    # nothing per packet or per flooding address: drop summaries and news of the client's own
    # paths (an overloaded box may declare them late for a moment), a bounded few
    own = [line for line in log_during if any(label in line for label in paths_before)]
    others = [line for line in log_during if line not in own and "drops so far" not in line]
    assert not others, others
    assert len(log_during) <= 40, log_during
