"""Out of descriptors, the control server's accept loop backs off quietly and recovers."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from fluxify.client.config import ServerAddress
from fluxify.client.control import fetch_session
from fluxify.protocol.control import SessionRequest
from tests.pki.factory import LOOPBACK_HOSTS, client_of, new_ca, server_cert, write_server_pki
from tests.server.test_control_limits import idle_connections

FD_LIMIT = 64
REPO = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def wait_for_file(path: Path, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(60):
        while not path.exists():
            assert proc.poll() is None, "the control server exited"
            await asyncio.sleep(0.05)


async def test_emfile_on_accept_neither_spins_nor_floods_the_log(tmp_path: Path) -> None:
    ca = new_ca()
    layout = write_server_pki(tmp_path, ca, server_cert(ca, LOOPBACK_HOSTS))
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.server.control_fd_server",
                str(layout.root),
                str(FD_LIMIT),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    try:
        await wait_for_file(layout.root / "port", proc)
        port = int((layout.root / "port").read_text())
        with idle_connections(port, 2 * FD_LIMIT):
            async with asyncio.timeout(60):
                while "cannot accept" not in log_path.read_text():
                    assert proc.poll() is None
                    await asyncio.sleep(0.05)
            # out of descriptors for a while: the loop must sleep, not spin on accept()
            cpu_before, wall_before = cpu_seconds(proc.pid), time.monotonic()
            await asyncio.sleep(2.0)
            cpu_used = cpu_seconds(proc.pid) - cpu_before
            wall = time.monotonic() - wall_before
        assert proc.poll() is None
        assert cpu_used < 0.5 * wall, f"{cpu_used:.2f} s of CPU in {wall:.2f} s"
        # the idle connections hit their handshake deadline and the descriptors come back
        address = ServerAddress("127.0.0.1", port)
        async with asyncio.timeout(60):
            while True:
                try:
                    response = await fetch_session(
                        address, client_of(ca, "alice"), SessionRequest("alice")
                    )
                    break
                except Exception:
                    await asyncio.sleep(0.2)
        assert response.session_id != 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log_path.read_text()
    assert text.count("cannot accept") == 1, text[-3000:]
    assert "Traceback" not in text and "out of system resource" not in text, text[-3000:]
