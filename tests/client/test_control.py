"""The control client against our server and against a Go-style server; errors users understand."""

import asyncio
import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from fluxify.client.config import ServerAddress
from fluxify.client.control import fetch_session
from fluxify.errors import ControlError, ControlTimeoutError, SessionRefusedError
from fluxify.pki.files import ServerPkiLayout
from fluxify.pki.tls import server_context
from fluxify.protocol.control import SessionRequest
from fluxify.server.control import ControlServer
from fluxify.server.sessions import SessionTable
from tests.pki.factory import client_of, new_ca, server_cert, write_server_pki
from tests.server.control_harness import running_server

ALICE = SessionRequest(client_name="alice")
GO_RESPONSE = {
    "session_id": 1780804892,
    "session_key": base64.b64encode(bytes(range(32))).decode(),
    "udp_port": 8000,
    "client_ip": "10.8.0.7",
    "client_ip6": "fd00:8::7",
}


async def test_server_certificate_from_another_ca(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        other_ca = replace(h.client("alice"), ca_pem=new_ca().cert_pem())
        with pytest.raises(ControlError, match=r"server certificate of .* is not signed by the CA"):
            await fetch_session(h.address, other_ca, ALICE)
    assert len(h.table) == 0


async def test_server_certificate_that_does_not_cover_the_dialed_host(tmp_path: Path) -> None:
    async with running_server(tmp_path, hosts=("localhost", "vpn.example.com")) as h:
        with pytest.raises(ControlError) as caught:
            await fetch_session(h.address, h.client("alice"), ALICE)
    assert str(caught.value).startswith(
        "server certificate does not cover 127.0.0.1 (it covers: localhost, vpn.example.com) — "
        "regenerate it with -hosts"
    )
    assert len(h.table) == 0


async def test_expired_server_certificate(tmp_path: Path) -> None:
    async with running_server(tmp_path, expired_server_cert=True) as h:
        with pytest.raises(ControlError, match=r"server certificate of .* has expired"):
            await fetch_session(h.address, h.client("alice"), ALICE)


async def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts TCP, never speaks TLS

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ControlTimeoutError, match=r"timed out after 0\.4 s"):
            await fetch_session(
                ServerAddress("127.0.0.1", port), client_of(new_ca(), "alice"), ALICE, timeout=0.4
            )
        assert time.monotonic() - started < 2.0
    finally:
        server.close()
        await server.wait_closed()


async def test_nothing_listening_says_cannot_connect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(
            ControlError, match=r"cannot connect to the control server 127\.0\.0\.1"
        ):
            await fetch_session(
                ServerAddress("127.0.0.1", port), client_of(new_ca(), "alice"), ALICE
            )


@contextmanager
def go_style_server(
    layout: ServerPkiLayout, answer: bytes, *, close_notify: bool
) -> Iterator[tuple[int, list[bytes]]]:
    """A blocking server that, like Go's, reads to EOF before it answers, then closes."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(layout.ca_cert))
    context.load_cert_chain(str(layout.server_cert), str(layout.server_key))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5.0)
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5.0)
        with context.wrap_socket(conn, server_side=True) as tls:
            body = b""
            while chunk := tls.recv(65536):  # b"" on the client's close_notify
                body += chunk
            received.append(body)
            tls.sendall(answer)
            if close_notify:
                tls.unwrap()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        thread.join(timeout=10)
        listener.close()


@pytest.mark.parametrize("close_notify", [True, False], ids=["close-notify", "bare-fin"])
async def test_interoperates_with_a_server_that_answers_only_after_eof(
    tmp_path: Path, close_notify: bool
) -> None:
    ca = new_ca()
    layout = write_server_pki(tmp_path, ca, server_cert(ca))
    answer = json.dumps(GO_RESPONSE, separators=(",", ":")).encode()
    with go_style_server(layout, answer, close_notify=close_notify) as (port, received):
        response = await fetch_session(
            ServerAddress("127.0.0.1", port), client_of(ca, "alice"), ALICE, timeout=5.0
        )
    assert received == [b'{"client_name":"alice"}']  # compact, no newline, then EOF
    assert response.session_id == 1780804892 and response.session_key == bytes(range(32))
    assert str(response.client_ip) == "10.8.0.7" and str(response.client_ip6) == "fd00:8::7"


async def test_a_server_that_closes_without_answering_means_refused(tmp_path: Path) -> None:
    ca = new_ca()
    layout = write_server_pki(tmp_path, ca, server_cert(ca))
    refused = pytest.raises(SessionRefusedError, match=r"refused this client .*'alice'")
    with go_style_server(layout, b"", close_notify=True) as (port, _), refused:
        await fetch_session(
            ServerAddress("127.0.0.1", port), client_of(ca, "alice"), ALICE, timeout=5.0
        )


async def test_localhost_by_name_works_when_covered(tmp_path: Path) -> None:
    async with running_server(tmp_path, hosts=("localhost",)) as h:
        address = ServerAddress("localhost", h.server.port)
        response = await fetch_session(address, h.client("alice"), ALICE)
    assert response.session_id != 0


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1 here")
async def test_ipv6_literal_server_address(tmp_path: Path) -> None:
    ca = new_ca()
    layout = write_server_pki(tmp_path, ca, server_cert(ca, ("::1",)))
    server = ControlServer(server_context(layout), SessionTable(), 8000)
    await server.start("::1", 0)
    try:
        response = await fetch_session(
            ServerAddress("::1", server.port), client_of(ca, "alice"), ALICE
        )
    finally:
        await server.close()
    assert response.session_id != 0
