"""The key schedule of feature rekey, in memory on a virtual clock: derivation, counter nonces,
epochs and their overlap, the limit per key, replays across epochs, checks before any crypto."""

import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from fluxify.errors import RemoteProtocolError
from fluxify.protocol.bond import BondConfig, BondEngine, Role
from fluxify.protocol.drops import DropReason
from fluxify.protocol.header import (
    HEADER_SIZE,
    MAX_SEQ,
    NONCE_SIZE,
    HeaderFlag,
    PacketType,
    unpack_header,
)
from fluxify.protocol.keys import (
    MESSAGES_PER_KEY,
    REKEY_AFTER_MESSAGES,
    Direction,
    KeySchedule,
    direction_key,
    epoch_secret,
)
from fluxify.protocol.rekey import ClientRekey, RekeyOffer, ServerRekey
from fluxify.protocol.replay import WINDOW_SIZE
from fluxify.protocol.session import DataSession

KEY = bytes(range(32))
SID = 0xA1B2C3D4
SALT1 = bytes([0x11]) * 32
SALT2 = bytes([0x22]) * 32
IPV4 = bytes([0x45]) + bytes(19) + b"data"


def pair(limit: int = 1 << 31) -> tuple[DataSession, DataSession, KeySchedule, KeySchedule]:
    ck = KeySchedule(KEY, SID, client=True, limit=limit)
    sk = KeySchedule(KEY, SID, client=False, limit=limit)
    client = DataSession(SID, KEY, numbered_control=True, keys=ck)
    server = DataSession(SID, KEY, numbered_control=True, keys=sk)
    return client, server, ck, sk


def rekey(ck: KeySchedule, sk: KeySchedule, epoch: int, salt: bytes) -> None:
    """The three steps of docs/keys.md, without the overlap's end."""
    sk.install(epoch, salt)
    ck.install(epoch, salt)
    assert sk.switch_send(epoch)


def ip(codec: DataSession) -> bytes:
    datagram = codec.seal_ip(IPV4)
    assert datagram is not None
    return datagram


# -- derivation ----------------------------------------------------------------------------------


def test_the_derivation_is_hkdf_sha256_with_the_documented_labels() -> None:
    """Recomputed here from the formulas of docs/keys.md, independently of the module."""
    ids0 = struct.pack(">II", SID, 0)
    s0 = HKDF(hashes.SHA256(), 32, None, b"fluxify epoch secret" + ids0).derive(KEY)
    assert epoch_secret(KEY, b"", SID, 0) == s0
    c2s = HKDFExpand(hashes.SHA256(), 32, b"fluxify key client to server" + ids0).derive(s0)
    s2c = HKDFExpand(hashes.SHA256(), 32, b"fluxify key server to client" + ids0).derive(s0)
    assert direction_key(s0, SID, 0, Direction.CLIENT_TO_SERVER) == c2s
    assert direction_key(s0, SID, 0, Direction.SERVER_TO_CLIENT) == s2c
    assert len({KEY, c2s, s2c}) == 3  # never the session key itself, one key per direction
    ids1 = struct.pack(">II", SID, 1)
    s1 = HKDF(hashes.SHA256(), 32, SALT1, b"fluxify epoch secret" + ids1).derive(s0)
    assert epoch_secret(s0, SALT1, SID, 1) == s1


def test_each_direction_has_its_own_key_and_both_ends_agree() -> None:
    client, server, _, _ = pair()
    up, down = ip(client), ip(server)
    assert server.open(up) == (PacketType.IP, IPV4)
    assert client.open(down) == (PacketType.IP, IPV4)
    # a datagram reflected back to its sender does not open: the other direction's key
    reflected = DataSession(SID, KEY, keys=KeySchedule(KEY, SID, client=True))
    assert reflected.open(ip(client)) is None
    assert reflected.drops[DropReason.BAD_TAG] == 1


def test_nonces_are_the_epoch_and_a_counter_of_messages_under_the_key() -> None:
    client, server, ck, sk = pair()
    datagrams = [ip(client), client.seal_heartbeat(5), ip(client)]
    nonces = [d[22:34] for d in datagrams]
    assert nonces == [bytes(4) + struct.pack(">Q", n) for n in range(3)]
    assert ck.send.sent == 3
    rekey(ck, sk, 1, SALT1)
    after = ip(client)
    assert after[22:34] == struct.pack(">IQ", 1, 0)  # a new key counts from 0 again
    assert unpack_header(after).flags & HeaderFlag.KEY_PHASE
    assert not unpack_header(datagrams[0]).flags & HeaderFlag.KEY_PHASE
    for datagram in [*datagrams, after]:
        assert server.open(datagram) is not None


# -- epochs and overlap ---------------------------------------------------------------------------


def test_a_datagram_in_flight_under_the_old_epoch_opens_during_the_overlap_not_after() -> None:
    client, server, ck, sk = pair()
    old = ip(client)
    older = ip(client)
    rekey(ck, sk, 1, SALT1)
    assert server.open(ip(client)) is not None  # new epoch
    assert server.open(old) == (PacketType.IP, IPV4)  # late, old epoch: the overlap
    assert sk.retire(0)
    assert sk.accepted_epochs() == [1]
    assert server.open(older) is None
    assert server.drops[DropReason.UNKNOWN_KEY] == 1  # refused before any AES-GCM
    assert server.drops[DropReason.BAD_TAG] == 0


def test_a_replay_across_epochs_is_refused() -> None:
    client, server, ck, sk = pair()
    captured = ip(client)
    assert server.open(captured) is not None
    rekey(ck, sk, 1, SALT1)
    assert server.open(ip(client)) is not None
    assert server.open(captured) is None  # same seq space across epochs: seen
    assert server.drops[DropReason.REPLAY] == 1
    rekey(ck, sk, 2, SALT2)  # epoch 2 takes epoch 0's phase slot
    assert server.open(captured) is None
    assert server.drops[DropReason.REPLAY] == 2


def test_installing_the_epoch_after_next_replaces_the_old_one_in_its_phase_slot() -> None:
    _, _, ck, sk = pair()
    rekey(ck, sk, 1, SALT1)
    rekey(ck, sk, 2, SALT2)
    assert ck.accepted_epochs() == [1, 2] == sk.accepted_epochs()


def test_epochs_go_up_by_one_and_salts_have_their_size() -> None:
    _, _, ck, _ = pair()
    with pytest.raises(RemoteProtocolError, match="epochs go up by one"):
        ck.install(2, SALT1)
    with pytest.raises(RemoteProtocolError, match="salt is 3 bytes"):
        ck.install(1, b"abc")
    assert not ck.retire(0)  # never the newest


# -- the limit per key and the seq wrap -----------------------------------------------------------


def test_a_full_key_stops_sending_rather_than_reuse_a_nonce_and_a_rekey_resumes() -> None:
    client, server, ck, sk = pair(limit=4)
    sent = [client.seal_ip(IPV4) for _ in range(6)]
    assert [d is not None for d in sent] == [True] * 4 + [False] * 2
    assert client.seal_heartbeat(1) == b""  # nothing at all to put on the wire
    assert client.drops[DropReason.KEY_EXHAUSTED] == 3
    assert client.last_seq == 4  # no number spent on what was not sent
    rekey(ck, sk, 1, SALT1)
    resumed = ip(client)
    assert unpack_header(resumed).seq == 5
    assert server.open(resumed) == (PacketType.IP, IPV4)


def test_rekey_is_wanted_at_half_the_limit() -> None:
    client, _, ck, _ = pair(limit=8)
    ck.rekey_after = 4
    for _ in range(3):
        ip(client)
    assert not ck.wants_rekey
    ip(client)
    assert ck.wants_rekey and not ck.exhausted


def test_the_products_own_limits_ask_for_a_rekey_at_2_30_and_stop_at_2_31() -> None:
    """Not scaled down: the schedules keep the product's constants; the counters are moved to
    just below each limit (sealing 2^30 messages would take an hour here)."""
    assert (REKEY_AFTER_MESSAGES, MESSAGES_PER_KEY) == (1 << 30, 1 << 31)
    client, server, ck, sk = pair()
    client_rekey = ClientRekey(ck, interval_s=3600.0, now=0.0)
    server_rekey = ServerRekey(sk, interval_s=3600.0, now=0.0)
    ck.send.sent = REKEY_AFTER_MESSAGES - 2
    ip(client)
    assert client_rekey.on_timer(1.0) is None and not ck.wants_rekey  # 2^30 - 1 sealed
    ip(client)
    assert ck.wants_rekey and not ck.exhausted
    assert client_rekey.on_timer(2.0) == 0  # asks for epoch 0's successor long before 1 h
    sk.send.sent = REKEY_AFTER_MESSAGES
    assert server_rekey.due(2.0)

    ck.send.sent = MESSAGES_PER_KEY - 1
    last = ip(client)
    nonce = last[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE]
    assert nonce == struct.pack(">IQ", 0, MESSAGES_PER_KEY - 1)  # epoch 0, counter 2^31 - 1
    assert server.open(last) == (PacketType.IP, IPV4)
    assert ck.exhausted and client.seal_ip(IPV4) is None
    assert client.drops[DropReason.KEY_EXHAUSTED] == 1
    rekey(ck, sk, 1, SALT1)
    resumed = ip(client)
    assert resumed[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE] == struct.pack(">IQ", 1, 0)
    assert server.open(resumed) == (PacketType.IP, IPV4)


def test_the_seq_wrap_is_crossed_under_one_key_without_a_number_coming_round_again() -> None:
    """One key carries fewer than 2^31 numbers: around 2^32 the replay window still orders
    them, and a datagram from before the wrap is refused after it."""
    client, server, _, _ = pair()
    client._seq = MAX_SEQ - 3
    before = [ip(client) for _ in range(3)]
    after = [ip(client) for _ in range(3)]
    assert [unpack_header(d).seq for d in after] == [1, 2, 3]
    for datagram in before + after:
        assert server.open(datagram) == (PacketType.IP, IPV4)
    assert server.open(before[0]) is None
    assert server.drops[DropReason.REPLAY] == 1


# -- the cheap checks before any crypto ---------------------------------------------------------


class CountingAead:
    """Stands in for a receive key's AESGCM to count decryptions."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.calls = 0

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        self.calls += 1
        return self.real.decrypt(nonce, data, aad)  # type: ignore[attr-defined]


def test_a_seen_or_hopelessly_old_seq_costs_no_decryption() -> None:
    client, server, _, sk = pair()
    first = ip(client)
    slot = sk.receive[0]
    assert slot is not None
    counting = CountingAead(slot.aead)
    slot.aead = counting  # type: ignore[assignment]
    assert server.open(first) is not None
    old = [ip(client) for _ in range(2)]
    for _ in range(WINDOW_SIZE + 10):
        ip(client)
    assert server.open(ip(client)) is not None  # the window moves far ahead
    calls = counting.calls
    forged = bytearray(first)
    forged[-1] ^= 1  # a bad tag would cost a decryption: the seq check comes first
    assert server.open(bytes(forged)) is None
    assert server.open(first) is None
    assert server.open(old[0]) is None
    assert counting.calls == calls
    assert server.drops[DropReason.REPLAY] == 3
    assert server.drops[DropReason.BAD_TAG] == 0


def test_a_v1_session_keeps_one_key_and_random_nonces() -> None:
    a, b = DataSession(SID, KEY), DataSession(SID, KEY)
    first, second = ip(a), ip(a)
    assert first[22:34] != second[22:34] != bytes(12)
    assert unpack_header(first).flags == 0
    assert b.open(first) is not None and b.open(second) is not None


# -- when: the rekey state machines on a virtual clock -------------------------------------------


def test_the_server_offers_after_the_interval_and_retires_after_the_overlap() -> None:
    _, server_codec, ck, sk = pair()
    server = ServerRekey(sk, interval_s=60.0, now=0.0)
    client = ClientRekey(ck, interval_s=3600.0, now=0.0)
    assert not server.due(59.0)
    assert server.due(60.0)
    offer = server.offer(SALT1)
    assert not server.due(61.0)  # one at a time
    assert sk.accepted_epochs() == [0, 1] and sk.send.epoch == 0
    assert client.on_rekey(offer, 60.1) == 1
    assert ck.send.epoch == 1
    assert server.on_ack(1, 60.2)
    assert sk.send.epoch == 1
    assert not server.on_ack(1, 60.3)  # a second ack changes nothing
    server.on_timer(60.2 + server.overlap_s - 0.01)
    assert sk.accepted_epochs() == [0, 1]
    server.on_timer(60.2 + server.overlap_s)
    assert sk.accepted_epochs() == [1]
    assert not server.due(60.2 + 59.0)
    assert server.due(60.2 + 60.0)  # the interval counts from the switch
    # the client keeps epoch 0 until the server's first datagram under epoch 1, plus the overlap
    client.on_timer(100.0)
    assert ck.accepted_epochs() == [0, 1]
    down = server_codec.seal_ip(IPV4)
    assert down is not None
    receiver = DataSession(SID, KEY, numbered_control=True, keys=ck)
    assert receiver.open(down) is not None
    client.on_timer(101.0)
    client.on_timer(101.0 + client.overlap_s)
    assert ck.accepted_epochs() == [1]


def test_the_same_offer_twice_is_acknowledged_twice_and_installed_once() -> None:
    _, _, ck, _ = pair()
    client = ClientRekey(ck, interval_s=3600.0, now=0.0)
    offer = RekeyOffer(1, SALT1)
    assert client.on_rekey(offer, 1.0) == client.on_rekey(offer, 2.0) == 1
    assert client.rekeys == 1


def test_the_client_asks_once_per_epoch_when_its_key_is_due_or_its_interval_passed() -> None:
    _, _, ck, sk = pair()
    client = ClientRekey(ck, interval_s=30.0, now=0.0)
    assert client.on_timer(29.0) is None
    assert client.on_timer(30.0) == 0
    assert client.on_timer(31.0) is None  # asked already
    server = ServerRekey(sk, interval_s=3600.0, now=0.0)
    server.on_request(0)
    assert server.due(31.0)
    client.on_rekey(server.offer(SALT1), 31.0)
    ck.send.sent = ck.rekey_after
    assert client.on_timer(32.0) == 1  # the message count, long before the interval
    server.on_request(7)  # stale or bogus: ignored
    assert not server.requested


def test_a_request_is_asked_again_on_reattach_until_a_new_epoch_comes() -> None:
    _, _, ck, sk = pair()
    client = ClientRekey(ck, interval_s=3600.0, now=0.0)
    assert client.request_again() is None  # nothing was asked
    ck.send.sent = ck.rekey_after
    assert client.on_timer(1.0) == 0  # sent while the channel was down: lost
    assert client.on_timer(2.0) is None  # the timer does not ask twice ...
    assert client.request_again() == 0  # ... the next attach does, as often as it comes
    assert client.request_again() == 0
    server = ServerRekey(sk, interval_s=3600.0, now=0.0)
    server.on_request(0)
    client.on_rekey(server.offer(SALT1), 3.0)
    assert client.request_again() is None  # answered: the new epoch is not due
    server.on_request(0)  # a request repeated after the offer is stale: ignored
    assert not server.requested


def test_the_overlap_is_at_most_half_the_interval() -> None:
    _, _, _, sk = pair()
    assert ServerRekey(sk, interval_s=2.0, now=0.0).overlap_s == 1.0
    assert ServerRekey(sk, interval_s=3600.0, now=0.0).overlap_s == 10.0


def test_an_engine_whose_send_key_is_used_up_puts_nothing_on_the_wire() -> None:
    keys = KeySchedule(KEY, SID, client=True, limit=2)
    codec = DataSession(SID, KEY, numbered_control=True, keys=keys)
    engine: BondEngine[int] = BondEngine(codec, BondConfig(Role.CLIENT, v2=True), 0.0)
    engine.add_path(0, "wan1", 0.0)
    engine.send_handshakes(0.0)
    engine.send_handshakes(0.0)
    assert len(engine.outgoing()[0]) == 2
    engine.send_handshakes(0.0)
    assert engine.send([IPV4], 0.0) == {}
    assert codec.drops[DropReason.KEY_EXHAUSTED] == 2
