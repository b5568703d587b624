"""The persistent control channel over real TLS on 127.0.0.1 (feature rekey): rekey, goodbye,
revocation push, refusals, and nothing of it for a v1 client."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from fluxify.client.channel import ClientChannel
from fluxify.client.config import ServerAddress
from fluxify.client.control import fetch_session
from fluxify.errors import RemoteProtocolError
from fluxify.pki.certs import Issued, load_cert
from fluxify.pki.client_material import ClientMaterial
from fluxify.pki.tls import server_context
from fluxify.protocol.channel import Frame, FrameDecoder, FrameType, encode_frame
from fluxify.protocol.control import (
    FEATURE_BOND_V2,
    FEATURE_REKEY,
    Extensions,
    SessionRequest,
    SessionResponse,
)
from fluxify.protocol.header import PacketType
from fluxify.protocol.keys import KeySchedule
from fluxify.protocol.session import DataSession
from fluxify.server.channels import ChannelHub
from fluxify.server.control import ControlServer
from fluxify.server.sessions import RemovalReason, Session, SessionTable
from tests.pki.factory import client_of, new_ca, server_cert, write_server_pki
from tests.server.control_harness import UDP_PORT


class FakeClock:
    """A virtual monotonic clock: the rekey interval passes when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


WAIT_S = 10.0
INTERVAL_S = 60.0
REKEY = SessionRequest("alice", Extensions(features=frozenset({FEATURE_BOND_V2, FEATURE_REKEY})))
IPV4 = bytes([0x45]) + bytes(19) + b"payload"


@dataclass
class Server:
    ca: Issued
    table: SessionTable
    hub: ChannelHub
    control: ControlServer
    clock: FakeClock
    keys: dict[int, KeySchedule]
    removed: list[tuple[Session, RemovalReason]]
    revoked: set[int]

    def client(self, name: str = "alice") -> ClientMaterial:
        return client_of(self.ca, name)


@asynccontextmanager
async def channel_server(root: Path) -> AsyncIterator[Server]:
    ca = new_ca()
    layout = write_server_pki(root, ca, server_cert(ca))
    table = SessionTable()
    clock = FakeClock()
    hub = ChannelHub(table, interval_s=INTERVAL_S, clock=clock)
    keys: dict[int, KeySchedule] = {}
    removed: list[tuple[Session, RemovalReason]] = []
    revoked: set[int] = set()

    def opened(session: Session) -> None:  # as server/app.py does it
        if FEATURE_REKEY in session.features:
            keys[session.session_id] = schedule = KeySchedule(
                session.key, session.session_id, client=False
            )
            hub.add(session, schedule)

    def gone(session: Session, reason: RemovalReason) -> None:
        hub.remove(session, reason)
        removed.append((session, reason))

    table.on_opened(opened)
    table.on_removed(gone)
    control = ControlServer(
        server_context(layout),
        table,
        UDP_PORT,
        accepted_features=frozenset({FEATURE_BOND_V2, FEATURE_REKEY}),
        channels=hub,
        is_revoked=revoked.__contains__,
    )
    await control.start("127.0.0.1", 0)
    try:
        yield Server(ca, table, hub, control, clock, keys, removed, revoked)
    finally:
        await control.close()


async def wait_for(what: str, condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


@asynccontextmanager
async def attached(
    server: Server, material: ClientMaterial, response: SessionResponse, revocations: list[str]
) -> AsyncIterator[tuple[ClientChannel, KeySchedule, asyncio.Task[None]]]:
    keys = KeySchedule(response.session_key, response.session_id, client=True)
    channel = ClientChannel(
        address(server),
        material,
        response.session_id,
        keys,
        INTERVAL_S,
        on_revoked=revocations.append,
        clock=server.clock,
    )
    task = asyncio.create_task(channel.run())
    try:
        async with asyncio.timeout(WAIT_S):
            await channel.attached.wait()
        yield channel, keys, task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def address(server: Server) -> ServerAddress:
    return ServerAddress("127.0.0.1", server.control.port)


async def grant(server: Server, material: ClientMaterial) -> SessionResponse:
    return await fetch_session(address(server), material, REKEY)


def codecs(
    server: Server, response: SessionResponse, keys: KeySchedule
) -> tuple[DataSession, DataSession]:
    sid = response.session_id
    client = DataSession(sid, response.session_key, numbered_control=True, keys=keys)
    srv = DataSession(sid, response.session_key, numbered_control=True, keys=server.keys[sid])
    return client, srv


def both_ways(client: DataSession, server: DataSession) -> None:
    up = client.seal_ip(IPV4)
    down = server.seal_ip(IPV4)
    assert up is not None and down is not None
    assert server.open(up) == (PacketType.IP, IPV4)
    assert client.open(down) == (PacketType.IP, IPV4)


async def test_a_rekey_over_the_channel_moves_both_directions_to_the_new_epoch(
    tmp_path: Path,
) -> None:
    async with channel_server(tmp_path) as server:
        alice = server.client()
        response = await grant(server, alice)
        assert response.extensions is not None
        assert response.extensions.features == {FEATURE_BOND_V2, FEATURE_REKEY}
        async with attached(server, alice, response, []) as (_channel, keys, _task):
            client_codec, server_codec = codecs(server, response, keys)
            both_ways(client_codec, server_codec)
            in_flight = server_codec.seal_ip(IPV4)  # sealed under epoch 0, arrives late
            server.clock.advance(INTERVAL_S)
            server.hub.tick()
            rekey = server.hub.rekeys[response.session_id]
            await wait_for("the client's ack", lambda: rekey.rekeys == 1)
            assert keys.send.epoch == 1 and server.keys[response.session_id].send.epoch == 1
            both_ways(client_codec, server_codec)
            assert in_flight is not None
            assert client_codec.open(in_flight) == (PacketType.IP, IPV4)  # the overlap
            assert client_codec.drops.total() == server_codec.drops.total() == 0


async def test_a_rekey_request_from_the_client_gets_a_new_epoch(tmp_path: Path) -> None:
    async with channel_server(tmp_path) as server:
        alice = server.client()
        response = await grant(server, alice)
        async with attached(server, alice, response, []) as (channel, keys, _task):
            keys.send.sent = keys.rekey_after  # our key is due, long before the interval
            channel.tick()
            rekey = server.hub.rekeys[response.session_id]
            await wait_for("the new epoch", lambda: rekey.rekeys == 1 and keys.send.epoch == 1)


async def test_a_rekey_request_made_while_the_channel_was_lost_is_sent_on_reattach(
    tmp_path: Path,
) -> None:
    async with channel_server(tmp_path) as server:
        alice = server.client()
        response = await grant(server, alice)
        async with attached(server, alice, response, []) as (channel, keys, _task):
            server.hub._links[response.session_id].send(None)  # the connection is lost
            await wait_for("the client to see it", lambda: not channel.attached.is_set())
            keys.send.sent = keys.rekey_after  # our key is due while there is no channel
            channel.tick()
            assert not channel.attached.is_set()  # the request had nowhere to go
            await wait_for("the channel back", channel.attached.is_set)
            rekey = server.hub.rekeys[response.session_id]
            await wait_for(  # the server's interval is far off: only our request brings it
                "the new epoch after the reconnect",
                lambda: rekey.rekeys == 1 and keys.send.epoch == 1,
            )


async def test_goodbye_frees_the_session_and_its_addresses_at_once(tmp_path: Path) -> None:
    async with channel_server(tmp_path) as server:
        alice = server.client()
        response = await grant(server, alice)
        async with attached(server, alice, response, []) as (channel, _keys, task):
            await channel.goodbye()
            await wait_for(
                "the session to end", lambda: server.table.by_id(response.session_id) is None
            )
            await asyncio.wait_for(task, WAIT_S)  # the channel ended, no reconnect
        assert [r for _s, r in server.removed] == [RemovalReason.GOODBYE]
        assert server.hub.goodbyes == 1
        # the address is free again: bob gets alice's .2 back only after the others; here the
        # pool hands the next one, and alice's reconnect gets a fresh session
        assert len(server.table) == 0


async def test_a_revocation_ends_the_session_and_is_pushed_to_the_client(tmp_path: Path) -> None:
    async with channel_server(tmp_path) as server:
        alice = server.client()
        response = await grant(server, alice)
        revocations: list[str] = []
        async with attached(server, alice, response, revocations) as (channel, _keys, task):
            serial = load_cert(alice.cert_pem, "alice").serial_number
            server.revoked.add(serial)
            ended = server.table.close_revoked(frozenset({serial}))
            assert [s.session_id for s in ended] == [response.session_id]
            await asyncio.wait_for(task, WAIT_S)  # run() returned: it does not reconnect
            assert channel.revoked
        assert len(revocations) == 1 and "revoked" in revocations[0]
        assert "not reconnecting" in revocations[0]


async def test_a_channel_for_another_identitys_session_is_refused(tmp_path: Path) -> None:
    async with channel_server(tmp_path) as server:
        response = await grant(server, server.client("alice"))
        mallory = ClientChannel(
            address(server),
            server.client("mallory"),
            response.session_id,
            KeySchedule(bytes(32), response.session_id, client=True),
            INTERVAL_S,
            on_revoked=lambda _m: None,
        )
        task = asyncio.create_task(mallory.run())
        try:
            await asyncio.sleep(0.5)
            assert not mallory.attached.is_set()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert server.table.by_id(response.session_id) is not None


async def test_rekey_is_granted_only_with_bond_v2_and_never_to_a_v1_client(
    tmp_path: Path,
) -> None:
    async with channel_server(tmp_path) as server:
        alice = server.client()
        address_ = address(server)
        only_rekey = SessionRequest("alice", Extensions(features=frozenset({FEATURE_REKEY})))
        response = await fetch_session(address_, alice, only_rekey)
        assert response.extensions is not None and response.extensions.features == frozenset()
        v1 = await fetch_session(address_, alice, SessionRequest("alice"))
        assert v1.extensions is None
        assert server.hub.rekeys == {}


def test_frames_round_trip_and_bad_ones_are_protocol_errors() -> None:
    frames = [
        Frame(FrameType.ATTACH, 0xA1B2C3D4),
        Frame(FrameType.REKEY, 7, bytes(range(32))),
        Frame(FrameType.GOODBYE),
    ]
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out = [f for i in range(len(wire)) for f in decoder.feed(wire[i : i + 1])]
    assert out == frames
    assert wire[:7] == bytes.fromhex("01 0004 a1b2c3d4")
    with pytest.raises(RemoteProtocolError, match="unknown frame type 99"):
        FrameDecoder().feed(bytes([99, 0, 0]))
    with pytest.raises(RemoteProtocolError, match="GOODBYE has 1 bytes"):
        FrameDecoder().feed(bytes([6, 0, 1, 0]))
    with pytest.raises(RemoteProtocolError, match="more than"):
        FrameDecoder().feed(bytes([3, 0xFF, 0xFF]))
