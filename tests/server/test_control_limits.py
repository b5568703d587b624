"""The control server cannot be knocked over: caps, deadlines, quiet logs, TLS off the data loop.

Over real TLS on loopback. Hostile connections come from 127.0.0.2.. (all of 127/8 is local on
Linux) so the per-source cap can tell them from the client that must still be served.
"""

import asyncio
import logging
import resource
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fluxify.client.control import fetch_session
from fluxify.errors import ControlError
from fluxify.linux.limits import raise_open_file_limit
from fluxify.pki.tls import client_context
from fluxify.pki.tls_stream import TlsStream
from fluxify.protocol.control import SessionRequest
from fluxify.server.admission import ConnectionOutcome
from fluxify.server.sessions import Session
from tests.server.control_harness import Harness, raw_client_fin, running_server

ALICE = SessionRequest(client_name="alice")
HOSTILE = "127.0.0.2"
IDLE_CONNECTIONS = 1100


@contextmanager
def idle_connections(port: int, count: int, source: str = HOSTILE) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections that never send a byte, each from ``source``.

    A connection over the server's cap may be reset while it is still being set up: that is the
    server doing its job, so it is counted out, not raised."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind((source, 0))
            try:
                sock.connect(("127.0.0.1", port))
            except (ConnectionResetError, ConnectionRefusedError):
                sock.close()
                sockets.remove(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def control_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "fluxify.server.control"]


async def wait_for(condition: object, timeout_s: float = 30.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_1100_idle_connections_do_not_stop_a_new_client_getting_its_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if raise_open_file_limit() < 2 * IDLE_CONNECTIONS + 200:
        pytest.skip("the open-file limit is too low for this test")
    caplog.set_level(logging.INFO)
    async with running_server(tmp_path, max_per_source=32) as h:
        with idle_connections(h.server.port, IDLE_CONNECTIONS):
            refused = h.server.admission.totals
            await wait_for(lambda: refused[ConnectionOutcome.OVER_SOURCE_CAP] >= 1000)
            assert h.server.admission.open <= 32
            started = time.monotonic()
            response = await fetch_session(h.address, h.client("alice"), ALICE)
            assert time.monotonic() - started < 1.0
            assert h.table.by_id(response.session_id) is not None
    # Refused connections are counted and summarised, never logged one by one.
    assert len(control_records(caplog)) < 10
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_over_the_global_cap_connections_are_closed_at_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(
        tmp_path, max_connections=20, max_per_source=100, summary_interval_s=0.2
    ) as h:
        with idle_connections(h.server.port, 20):
            await wait_for(lambda: h.server.admission.open == 20)
            with idle_connections(h.server.port, 30, source="127.0.0.3") as extra:
                await wait_for(
                    lambda: h.server.admission.totals[ConnectionOutcome.OVER_GLOBAL_CAP] == 30
                )
                for sock in extra:  # closed by the server at once, not at a deadline
                    sock.settimeout(5.0)
                    with pytest.raises(ConnectionResetError):
                        assert sock.recv(1) == b""
                        raise ConnectionResetError
            await wait_for(lambda: "over the cap on all connections" in caplog.text)
    summaries = [r for r in control_records(caplog) if "without a session" in r.getMessage()]
    assert 1 <= len(summaries) <= 3
    assert "30 over the cap on all connections" in summaries[0].getMessage()


async def test_a_handshake_flood_from_one_source_costs_an_accept_and_a_close_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Over its rate of new connections a source is reset right after accept, before any TLS
    work: only its burst gets a handshake; a client from another address is served at once."""
    caplog.set_level(logging.INFO)
    async with running_server(
        tmp_path, new_per_source_per_s=0.01, new_per_source_burst=5, summary_interval_s=0.2
    ) as h:
        attempts = 60
        outcomes = await asyncio.to_thread(_anonymous_handshakes, h.server.port, attempts)
        totals = h.server.admission.totals
        await wait_for(lambda: sum(totals.values()) >= attempts)
        assert totals[ConnectionOutcome.OVER_SOURCE_RATE] == attempts - 5
        assert totals[ConnectionOutcome.HANDSHAKE_FAILED] == 5  # the burst: no certificate
        assert outcomes.count("reset") >= attempts - 5
        started = time.monotonic()
        await fetch_session(h.address, h.client("alice"), ALICE)
        assert time.monotonic() - started < 1.0
        await wait_for(lambda: "over the rate of new connections" in caplog.text)
    rate_lines = [r for r in control_records(caplog) if "over the rate" in r.getMessage()]
    assert 1 <= len(rate_lines) <= 3


def _anonymous_handshakes(port: int, count: int) -> list[str]:
    """``count`` TLS handshakes without a certificate from ``HOSTILE``, one after another."""
    anonymous = ssl.create_default_context()
    anonymous.check_hostname = False
    anonymous.verify_mode = ssl.CERT_NONE
    outcomes = []
    for _ in range(count):
        with socket.socket() as sock:
            sock.settimeout(5.0)
            sock.bind((HOSTILE, 0))
            try:
                sock.connect(("127.0.0.1", port))
                with anonymous.wrap_socket(sock, server_hostname="x") as tls:
                    tls.recv(1)  # TLS 1.3: the server's verdict on the (missing) certificate
                outcomes.append("served")
            except (ConnectionResetError, BrokenPipeError):
                outcomes.append("reset")
            except (OSError, ssl.SSLError):
                outcomes.append("refused in TLS")
    return outcomes


async def test_an_idle_connection_is_closed_at_the_handshake_deadline(tmp_path: Path) -> None:
    """A connection that never completes a handshake lives ~3 s, not the 10 s request deadline."""
    async with running_server(tmp_path, deadline_s=10.0) as h:
        with idle_connections(h.server.port, 1) as (sock,):
            started = time.monotonic()
            closed_after = await asyncio.to_thread(_time_until_closed, sock, started)
        await wait_for(lambda: h.server.admission.open == 0)
    assert 2.4 < closed_after < 6.0
    assert h.server.admission.totals[ConnectionOutcome.HANDSHAKE_TIMEOUT] == 1


async def test_the_handshake_deadline_frees_the_source_for_a_real_client(tmp_path: Path) -> None:
    # The deadline leaves a loaded box time to try the client while the slots are still full.
    async with running_server(tmp_path, handshake_deadline_s=2.0, max_per_source=5) as h:
        with idle_connections(h.server.port, 5, source="127.0.0.1"):
            await wait_for(lambda: h.server.admission.open == 5)
            # the slots are full: the client from the same address is refused (reset during the
            # connect or the handshake, depending on which the RST reaches first)...
            with pytest.raises(ControlError, match=r"dropped the connection|cannot connect"):
                await fetch_session(h.address, h.client("alice"), ALICE)
            assert h.server.admission.totals[ConnectionOutcome.OVER_SOURCE_CAP] == 1
            # ...until the idle ones reach their handshake deadline
            await wait_for(lambda: h.server.admission.open == 0)
            await fetch_session(h.address, h.client("alice"), ALICE)


def _time_until_closed(sock: socket.socket, started: float) -> float:
    sock.settimeout(15.0)
    try:
        while sock.recv(1024):
            pass
    except (ssl.SSLError, ConnectionResetError):
        pass
    return time.monotonic() - started


async def test_tls_runs_off_the_callers_loop_and_the_table_stays_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handshake_threads: set[int] = set()
    real_handshake = TlsStream.handshake

    async def recording_handshake(self: TlsStream) -> None:
        if self._tls.server_side:
            handshake_threads.add(threading.get_ident())
        await real_handshake(self)

    monkeypatch.setattr(TlsStream, "handshake", recording_handshake)
    hook_threads: list[int] = []
    async with running_server(tmp_path) as h:

        def opened(session: Session) -> None:
            hook_threads.append(threading.get_ident())

        h.table.on_opened(opened)
        await fetch_session(h.address, h.client("alice"), ALICE)
    main = threading.get_ident()
    assert hook_threads == [main]  # the data plane's hooks run where the data plane lives
    assert handshake_threads and main not in handshake_threads


async def test_anonymous_handshakes_do_not_stall_the_callers_loop(tmp_path: Path) -> None:
    """~450 anonymous handshakes/s once cut the data-plane loop's turns from 846/s to 256/s."""
    async with running_server(tmp_path) as h:
        stop = threading.Event()
        anonymous = ssl.create_default_context()
        anonymous.check_hostname = False
        anonymous.verify_mode = ssl.CERT_NONE

        def hammer() -> None:
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", h.server.port), timeout=2) as s:
                        anonymous.wrap_socket(s, server_hostname="x").close()
                except (OSError, ssl.SSLError):
                    pass

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            failed = h.server.admission.totals
            await wait_for(lambda: failed[ConnectionOutcome.HANDSHAKE_FAILED] >= 20)
            # the longest single stall of this loop while the handshakes go on
            worst = 0.0
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                before = time.monotonic()
                await asyncio.sleep(0)
                worst = max(worst, time.monotonic() - before)
            started = time.monotonic()
            await fetch_session(h.address, h.client("alice"), ALICE)
            served_in = time.monotonic() - started
        finally:
            stop.set()
            for thread in threads:
                await asyncio.to_thread(thread.join)
    assert served_in < 1.0
    assert worst < 0.25  # one handshake's worth of CPU would not show here; a queue of them did


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 50_000, "nested too deeply"),
        (b'{"client_name": "alice", "extensions": ' + b"9" * 5000 + b"}", "not valid JSON"),
    ],
    ids=["deep-nesting", "4300-digit-number"],
)
async def test_deep_json_and_huge_numbers_are_refused_like_any_bad_request(
    tmp_path: Path, body: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(tmp_path) as h:
        context = client_context(h.client("alice"))
        answer = await asyncio.to_thread(raw_client_fin, h.server.port, context, body)
        assert answer == b""
        await fetch_session(h.address, h.client("alice"), ALICE)
    assert f"refused 'alice': session request is {reason}" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_tls_1_2_offers_only_aead_suites(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        cbc_only = client_context(h.client("alice"))
        cbc_only.maximum_version = ssl.TLSVersion.TLSv1_2
        # what Python's default server context still offered: the SHA-2 CBC suites
        cbc_only.set_ciphers("ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:AES256-SHA")
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(_handshake, h, cbc_only)
        aead = client_context(h.client("alice"))
        aead.maximum_version = ssl.TLSVersion.TLSv1_2
        assert "GCM" in await asyncio.to_thread(_handshake, h, aead)


def _handshake(h: Harness, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", h.server.port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        cipher = tls.cipher()
        assert cipher is not None
        return cipher[0]


def test_the_file_limit_helper_is_what_the_caps_are_sized_against() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_open_file_limit() >= soft
