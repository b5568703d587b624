"""What a replayer or a flooder can do to a bond engine: nothing that costs the session.

Engines driven by hand with datagrams a peer (or an attacker holding captures) would send; the
clock is a plain number. v1 control packets are unnumbered, so their freshness comes from the
heartbeat stamps and provisional paths; v2 numbers them under a replay window of their own.
"""

import struct

from fluxify.protocol.bond import (
    UNKNOWN_SOURCE_BURST,
    BondConfig,
    BondEngine,
    Role,
)
from fluxify.protocol.drops import DropReason
from fluxify.protocol.header import PacketType
from fluxify.protocol.heartbeat import pack_heartbeat
from fluxify.protocol.session import DataSession

KEY = bytes(range(32))
SID = 0x0A0B0C0D
CLIENT_A = ("192.0.2.10", 40000)
CLIENT_B = ("192.0.2.11", 40001)
ATTACKER = ("203.0.113.66", 6666)
SECOND_NS = 1_000_000_000


def server(v2: bool = False) -> BondEngine[tuple[str, int]]:
    codec = DataSession(SID, KEY, numbered_control=v2)
    return BondEngine(codec, BondConfig(Role.SERVER, v2), 0.0)


def ipv4(payload: bytes = b"x" * 20) -> bytes:
    total = 20 + len(payload)
    src, dst = bytes([10, 8, 0, 2]), bytes([10, 8, 0, 1])
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0, src, dst) + payload


def sent_to(engine: BondEngine[tuple[str, int]], key: tuple[str, int]) -> int:
    return len(engine.outgoing().get(key, []))


def test_a_replayed_v1_heartbeat_from_another_address_gets_no_echo_and_no_path() -> None:
    engine = server()
    client = DataSession(SID, KEY)
    heartbeat = client.seal_heartbeat(1 * SECOND_NS)
    engine.receive(CLIENT_A, [heartbeat], 1.0)
    assert sent_to(engine, CLIENT_A) == 1  # the genuine one is echoed
    engine.receive(ATTACKER, [heartbeat], 1.5)  # captured, replayed from elsewhere
    assert sent_to(engine, ATTACKER) == 0  # no echo: no amplifier
    path = engine.path(ATTACKER)
    assert path is not None and not path.confirmed
    assert [p.key for p in engine._usable] == [CLIENT_A]  # no downlink to it
    assert engine.take_events() == [("new", "192.0.2.10:40000")]  # no log line for it
    engine.send([ipv4()], 1.6)
    assert ATTACKER not in engine.outgoing()


def test_a_replayed_v1_heartbeat_on_its_own_path_or_a_stale_stamp_is_refused() -> None:
    engine = server()
    client = DataSession(SID, KEY)
    heartbeat = client.seal_heartbeat(10 * SECOND_NS)
    engine.receive(CLIENT_A, [heartbeat], 10.0)
    engine.outgoing()
    engine.receive(CLIENT_A, [heartbeat], 10.5)  # the same stamp again
    engine.receive(CLIENT_A, [client.seal_heartbeat(50 * SECOND_NS)], 11.0)  # 39 s ahead
    assert sent_to(engine, CLIENT_A) == 0
    assert engine.codec.drops[DropReason.STALE_HEARTBEAT] == 2


def test_a_fresh_v1_heartbeat_from_a_new_address_confirms_it_as_a_path() -> None:
    """NAT rebinding: the genuine client's next heartbeat comes from a new source address."""
    engine = server()
    client = DataSession(SID, KEY)
    engine.receive(CLIENT_A, [client.seal_heartbeat(1 * SECOND_NS)], 1.0)
    engine.receive(CLIENT_B, [client.seal_handshake()], 2.0)  # provisional: a replayable kind
    assert engine.path(CLIENT_B) is not None and not engine.path(CLIENT_B).confirmed  # type: ignore[union-attr]
    engine.receive(CLIENT_B, [client.seal_heartbeat(3 * SECOND_NS)], 3.0)
    assert engine.path(CLIENT_B).confirmed  # type: ignore[union-attr]
    assert sent_to(engine, CLIENT_B) == 1


def test_an_ip_packet_confirms_a_path_at_once_and_its_replay_is_refused() -> None:
    engine = server()
    client = DataSession(SID, KEY)
    datagram = client.seal_ip(ipv4())
    assert datagram is not None
    assert engine.receive(CLIENT_A, [datagram], 1.0) == [ipv4()]
    assert engine.path(CLIENT_A).confirmed  # type: ignore[union-attr]
    assert engine.receive(ATTACKER, [datagram], 1.1) == []
    assert engine.path(ATTACKER) is None
    assert engine.codec.drops[DropReason.REPLAY] == 1


def test_a_v2_control_packet_replayed_is_refused_wherever_it_comes_from() -> None:
    engine = server(v2=True)
    client = DataSession(SID, KEY, numbered_control=True)
    heartbeat = client.seal_control(int(PacketType.HEARTBEAT), pack_heartbeat(SECOND_NS))
    engine.receive(CLIENT_A, [heartbeat], 1.0)
    assert sent_to(engine, CLIENT_A) == 1
    engine.receive(CLIENT_A, [heartbeat], 1.1)
    engine.receive(ATTACKER, [heartbeat], 1.2)
    assert sent_to(engine, CLIENT_A) == sent_to(engine, ATTACKER) == 0
    assert engine.codec.drops[DropReason.CONTROL_REPLAY] == 2
    assert engine.path(ATTACKER) is None


def test_a_flood_of_bad_tags_from_another_address_gets_only_its_small_decryption_budget() -> None:
    engine = server()
    client = DataSession(SID, KEY)
    good = client.seal_ip(ipv4())
    unsent = client.seal_ip(ipv4())
    assert good is not None and unsent is not None
    # the right session id, a fresh seq (a seen one is refused before any crypto), a wrong tag
    forged = unsent[:-1] + bytes([unsent[-1] ^ 1])
    assert engine.receive(CLIENT_A, [good], 0.0) == [ipv4()]
    for step in range(1000):  # 1000 datagrams in 1 s, one at a time
        engine.receive(ATTACKER, [forged], step / 1000)
    drops = engine.codec.drops
    assert drops[DropReason.BAD_TAG] <= UNKNOWN_SOURCE_BURST + 20 + 1
    assert drops[DropReason.BAD_TAG] + drops[DropReason.UNKNOWN_SOURCE_BUDGET] == 1000
    # the session is unharmed: the forged copies did not even burn the number they carried
    assert engine.receive(CLIENT_A, [unsent], 1.0) == [ipv4()]


def test_a_replayed_old_echo_does_not_revive_a_dead_uplink() -> None:
    codec = DataSession(SID, KEY)
    client: BondEngine[int] = BondEngine(codec, BondConfig(Role.CLIENT, False), 0.0)
    client.add_path(0, "wan1", 0.0)
    client.add_path(1, "wan2", 0.0)
    server_codec = DataSession(SID, KEY)
    old_echo = server_codec.seal_echo(pack_heartbeat(1 * SECOND_NS))
    for now in (2.0, 4.0, 6.0, 8.0, 10.0):  # wan2 hears its echoes, wan1 nothing: it dies
        client.receive(1, [server_codec.seal_echo(pack_heartbeat(int(now * SECOND_NS)))], now)
        client.on_timer(now)
    assert not client.path(0).alive  # type: ignore[union-attr]
    client.receive(0, [old_echo], 10.5)  # an echo of a heartbeat from before the death
    assert not client.path(0).alive  # type: ignore[union-attr]
    client.receive(0, [server_codec.seal_echo(pack_heartbeat(10_600_000_000))], 10.7)
    assert client.path(0).alive  # type: ignore[union-attr]


def test_a_full_session_keeps_its_fresh_paths_and_refuses_a_new_one() -> None:
    engine = server()
    client = DataSession(SID, KEY)
    for port in range(16):
        datagram = client.seal_ip(ipv4())
        assert datagram is not None
        engine.receive(("192.0.2.20", port), [datagram], 1.0)
    datagram = client.seal_ip(ipv4())
    assert datagram is not None
    engine.receive(ATTACKER, [datagram], 2.0)
    assert engine.path(ATTACKER) is None
    assert engine.codec.drops[DropReason.PATH_LIMIT] == 1
    assert len(engine.paths) == 16
