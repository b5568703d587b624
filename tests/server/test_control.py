"""The mTLS control server over real TLS on 127.0.0.1: sessions, refusals, limits, Go framing."""

import asyncio
import json
import logging
import socket
import ssl
import time
from dataclasses import replace
from datetime import timedelta
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fluxify.client.control import fetch_session
from fluxify.errors import ControlError, SessionRefusedError
from fluxify.pki.certs import Issued, _leaf_builder, make_client_cert, new_key
from fluxify.pki.client_material import ClientMaterial
from fluxify.pki.tls import client_context
from fluxify.protocol.control import Extensions, SessionRequest, decode_response
from fluxify.server.sessions import POOL_SIZE
from tests.pki.factory import NOW, client_of, material, new_ca
from tests.server.control_harness import (
    UDP_PORT,
    raw_client_close_notify,
    raw_client_fin,
    running_server,
)

ALICE = SessionRequest(client_name="alice")


async def test_happy_path_gives_a_session_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluxify.server.control")
    async with running_server(tmp_path) as h:
        response = await fetch_session(h.address, h.client("alice"), ALICE)
    assert len(response.session_key) == 32 and response.session_id != 0
    assert response.udp_port == UDP_PORT
    assert response.client_ip == IPv4Address("10.8.0.2")
    assert response.client_ip6 == IPv6Address("fd00:8::2")
    assert response.extensions is None
    session = h.table.by_identity("alice")
    assert session is not None and session.session_id == response.session_id
    assert session.key == response.session_key
    assert "granted to 'alice' (10.8.0.2, fd00:8::2, TLSv1.3)" in caplog.text


async def test_reconnect_keeps_the_addresses_and_replaces_the_session(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        alice = h.client("alice")
        first = await fetch_session(h.address, alice, ALICE)
        await fetch_session(h.address, h.client("bob"), SessionRequest("bob"))
        again = await fetch_session(h.address, alice, SessionRequest(""))  # "" means the CN
    assert (again.client_ip, again.client_ip6) == (first.client_ip, first.client_ip6)
    assert again.session_id != first.session_id and again.session_key != first.session_key
    assert h.table.by_id(first.session_id) is None and len(h.table) == 2


async def test_a_name_other_than_the_certificate_cn_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(tmp_path) as h:
        await fetch_session(h.address, h.client("bob"), SessionRequest("bob"))
        with pytest.raises(SessionRefusedError, match="without a session"):
            await fetch_session(h.address, h.client("mallory"), SessionRequest("bob"))
    assert [s.identity for s in h.table] == ["bob"]
    assert "refused 'mallory': the request names 'bob' but the certificate is 'mallory'" in (
        caplog.text
    )


async def test_names_are_matched_exactly_not_case_insensitively(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(tmp_path) as h:
        with pytest.raises(SessionRefusedError, match="without a session"):
            await fetch_session(h.address, h.client("alice"), SessionRequest("ALICE"))
        assert len(h.table) == 0
        # Two certificates whose CNs differ only in case are two clients, not one.
        await fetch_session(h.address, h.client("alice"), ALICE)
        await fetch_session(h.address, h.client("Alice"), SessionRequest("Alice"))
        assert sorted(s.identity for s in h.table) == ["Alice", "alice"]
        assert h.table.by_identity("ALICE") is None
    assert "the request names 'ALICE' but the certificate is 'alice'" in caplog.text


async def test_a_certificate_without_a_common_name_gets_no_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no cn")])
    async with running_server(tmp_path) as h:
        cert = (
            _leaf_builder(h.ca, subject, key, NOW, timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(h.ca.key, hashes.SHA256())
        )
        nameless = replace(
            material(h.ca, Issued(cert, key), name="nameless"),
            common_name="",
        )
        for request in (SessionRequest(""), SessionRequest("alice")):
            with pytest.raises(SessionRefusedError, match="without a session"):
                await fetch_session(h.address, nameless, request)
        assert len(h.table) == 0
        await fetch_session(h.address, h.client("alice"), ALICE)  # the server is fine
    assert "has no common name (CN)" in caplog.text


@pytest.mark.parametrize(
    ("make_material", "reason"),
    [
        (lambda h: _signed_elsewhere(h.ca), "not signed by its CA"),
        (lambda h: h.client("alice", expired=True), "expired"),
    ],
    ids=["foreign-ca", "expired"],
)
async def test_bad_client_certificates_are_rejected_in_the_handshake(
    tmp_path: Path, make_material: object, reason: str
) -> None:
    async with running_server(tmp_path) as h:
        assert callable(make_material)
        with pytest.raises(
            ControlError, match=f"client certificate rejected by the server .*{reason}"
        ):
            await fetch_session(h.address, make_material(h), ALICE)
    assert len(h.table) == 0


def _signed_elsewhere(trusted: Issued) -> ClientMaterial:
    """Trusts the right CA, but its own certificate comes from another CA."""
    foreign = client_of(new_ca(), "alice")
    return replace(foreign, ca_pem=trusted.cert_pem())


async def test_a_certificate_without_client_auth_is_rejected(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        # The server's own certificate: signed by the right CA, but serverAuth only.
        server_as_client = replace(
            material(h.ca, make_client_cert(h.ca, "x", NOW)),
            cert_pem=h.layout.server_cert.read_bytes(),
            key_pem=h.layout.server_key.read_bytes(),
        )
        with pytest.raises(ControlError, match="rejected by the server"):
            await fetch_session(h.address, server_as_client, ALICE)
    assert len(h.table) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\xffgarbage",
        b"",
        b"[1, 2]",
        b'{"client_name": 7}',
        json.dumps({"client_name": "alice", "pad": "x" * (64 * 1024)}).encode(),
    ],
    ids=["garbage", "empty", "not-an-object", "bad-type", "oversize"],
)
async def test_bad_bodies_get_no_session_and_the_connection_is_closed(
    tmp_path: Path, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(tmp_path) as h:
        context = client_context(h.client("alice"))
        answer = await asyncio.to_thread(raw_client_fin, h.server.port, context, body)
        assert answer == b""
        assert len(h.table) == 0
        # The server is still fine for the next client.
        await fetch_session(h.address, h.client("alice"), ALICE)
    assert "refused 'alice'" in caplog.text


async def test_a_silent_connection_is_closed_at_the_deadline_while_others_are_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Long enough that serving alice on a loaded machine still fits well inside it: the test
    # is about order (alice served while the silent ones wait), not about how fast TLS is.
    deadline = 3.0
    async with running_server(tmp_path, deadline_s=deadline) as h:
        silent_tcp = socket.create_connection(("127.0.0.1", h.server.port))
        # Handshake done, then nothing: the server waits for a request that never comes.
        silent_tls = await asyncio.to_thread(
            client_context(h.client("slow")).wrap_socket,
            socket.create_connection(("127.0.0.1", h.server.port)),
            server_hostname="127.0.0.1",
        )
        try:
            started = time.monotonic()
            await fetch_session(h.address, h.client("alice"), ALICE)
            served_after = time.monotonic() - started
            silent_open_when_served = _still_open(silent_tcp)
            closed_after = await asyncio.to_thread(_time_until_closed, silent_tcp, started)
            await asyncio.to_thread(_time_until_closed, silent_tls, started)
        finally:
            silent_tcp.close()
            silent_tls.close()
    assert silent_open_when_served or served_after >= deadline, served_after
    assert closed_after >= deadline * 0.8  # never before its deadline (load only delays it)
    assert "no complete request within 3 s" in caplog.text
    assert [s.identity for s in h.table] == ["alice"]


def _still_open(sock: socket.socket) -> bool:
    """True while the peer has not closed ``sock`` (nothing to read yet, no EOF)."""
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))  # data would also mean still open
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def _time_until_closed(sock: socket.socket, started: float) -> float:
    sock.settimeout(30.0)  # fails the test (socket.timeout) if the server never closes it
    try:
        while sock.recv(1024):
            pass
    except (ssl.SSLError, ConnectionResetError):
        pass
    return time.monotonic() - started


async def test_pool_of_249_fills_and_the_next_client_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(tmp_path) as h:
        addresses = set()
        for i in range(POOL_SIZE):
            name = f"client{i}"
            response = await fetch_session(h.address, h.client(name), SessionRequest(name))
            addresses.add(response.client_ip)
        assert len(addresses) == POOL_SIZE == 249
        with pytest.raises(SessionRefusedError):
            await fetch_session(h.address, h.client("late"), SessionRequest("late"))
        # A known identity still reconnects on a full pool.
        await fetch_session(h.address, h.client("client5"), SessionRequest("client5"))
    assert "refused 'late': no inner address left" in caplog.text


async def test_extension_features_are_answered_with_the_accepted_subset(tmp_path: Path) -> None:
    async with running_server(tmp_path, accepted_features=frozenset({"b", "c"})) as h:
        offer = SessionRequest("alice", Extensions(version=2, features=frozenset({"a", "b"})))
        response = await fetch_session(h.address, h.client("alice"), offer)
    assert response.extensions == Extensions(version=2, features=frozenset({"b"}))
    session = h.table.by_identity("alice")
    assert session is not None and session.features == frozenset({"b"})


@pytest.mark.parametrize("raw_client", [raw_client_fin, raw_client_close_notify])
async def test_go_style_clients_that_half_close_get_the_v1_answer(
    tmp_path: Path, raw_client: object
) -> None:
    async with running_server(tmp_path) as h:
        context = client_context(h.client("alice"))
        assert callable(raw_client)
        answer = await asyncio.to_thread(
            raw_client, h.server.port, context, b'{"client_name":"alice"}'
        )
    assert isinstance(answer, bytes)
    keys = list(json.loads(answer))
    assert keys == ["session_id", "session_key", "udp_port", "client_ip", "client_ip6"]
    assert b" " not in answer and not answer.endswith(b"\n")
    response = decode_response(answer)
    assert response.client_ip == IPv4Address("10.8.0.2")


async def test_tls_1_2_clients_are_still_served(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        context = client_context(h.client("alice"))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        answer = await asyncio.to_thread(raw_client_fin, h.server.port, context, b"{}")
    assert decode_response(answer).client_ip == IPv4Address("10.8.0.2")
