"""2 000 idle TCP connections and a stream of anonymous TLS handshakes at the control port of a
real server (issue 13), while a client moves data through it and a new client asks for a session.

In the namespace lab with three ISPs: the flooder, a second client home, holds its idle
connections out of ISP 3 and hammers handshakes out of ISP 2; the clients' control connections
leave by ISP 1, so the per-source cap is what stops the flooder, not what refuses the clients.
The server never exits, the transfer arrives whole, the new client gets its session (the wait is
bounded generously and printed; the 1 s figure belongs to the report), the log stays short.
The loopback-only version with the control server alone is in test_control_limits.py.
"""

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fluxify.lab.bench_flood import FLOOD_MODULE
from fluxify.lab.deployment import deployment, wait_until
from tests.linux.conftest import requires_root

pytestmark = [pytest.mark.root, requires_root]

IDLE_CONNECTIONS = 2000
HANDSHAKE_SECONDS = 25.0
TRANSFER_BYTES = 20_000_000
WAIT_S = 60.0


def test_idle_connections_and_anonymous_handshakes_leave_the_server_serving(
    tmp_path: Path,
) -> None:
    with deployment(tmp_path, uplinks=3, prefix="fxf") as dep:
        dep.issue("alice")
        dep.issue("bob")
        carol_pki = dep.issue("carol")
        dep.start_server()
        dep.start_client("alice", ifaces="wan1,wan2")
        wait_until("the tunnel to carry a ping", dep.ping_internet, WAIT_S)
        flooder_ns = dep.bed.add_client_home()
        bob_ns = dep.bed.add_client_home()
        log_before = len(dep.log("server.log").splitlines())
        argv = [*FLOOD_MODULE, "control", "--host", str(dep.t.server_v4.ip)]
        argv += ["--idle", str(IDLE_CONNECTIONS), "--idle-bind", "wan3"]
        argv += ["--handshake-bind", "wan2", "--seconds", f"{HANDSHAKE_SECONDS:g}"]
        flooder = dep.bed.spawn(flooder_ns, argv, stdout=subprocess.PIPE, text=True)
        assert flooder.stdout is not None
        ready = json.loads(flooder.stdout.readline())
        assert ready["ready"] + ready["refused"] + ready["unanswered"] == IDLE_CONNECTIONS
        time.sleep(2.0)  # the handshakes are under way

        ask = ["session", "--host", str(dep.t.server_v4.ip), "--pki", str(carol_pki)]
        ask += ["--name", "carol", "--count", "5"]
        timing = dep.bed.run(bob_ns, [*FLOOD_MODULE, *ask], timeout=WAIT_S)
        session_s = json.loads(timing.stdout.strip().splitlines()[-1])["session_s"]
        started = time.monotonic()
        dep.start_client("bob", netns=bob_ns, ifaces="wan1,wan3")
        wait_until(
            "bob's session at the server",
            lambda: "bob" in {s["identity"] for s in dep.server_stats()["sessions"]},
            WAIT_S,
        )
        bob_session_s = time.monotonic() - started
        sent, received = dep.transfer(TRANSFER_BYTES)
        assert dep.server is not None
        assert dep.server.poll() is None  # still running while the flood goes on
        out, _ = flooder.communicate(timeout=HANDSHAKE_SECONDS + 60)
        flood: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        assert dep.server.poll() is None
        log_during = dep.log("server.log").splitlines()[log_before:]

    print(f"session requests during the flood took {session_s} s")
    print(f"bob's session {bob_session_s:.2f} s after starting fluxify-client; flood {flood}")
    assert received["bytes"] == sent["bytes"] == TRANSFER_BYTES
    assert received["sha256"] == sent["sha256"]
    assert flood["handshakes"] > 100, flood
    assert flood["held"] <= IDLE_CONNECTIONS
    assert bob_session_s < 30.0  # generous: a loaded box; the measured figures are printed
    assert len(session_s) == 5
    # summaries of refused connections, the two sessions and their paths; never one per attempt
    assert len(log_during) < 40, log_during[:50]
    assert not [line for line in log_during if "Traceback" in line]
