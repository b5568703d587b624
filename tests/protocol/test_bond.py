"""The bond engine between two endpoints over the fake network (tests/protocol/netsim.py):
earliest-arrival scheduling, selective duplication, the reorder hold, the rate model, v1 mode
and malformed feedback. Invariants over random networks: test_bond_properties.py; failover and
priorities: test_bond_failover.py."""

import struct
from typing import Any

import pytest

from fluxify.protocol.bond import (
    HOLD_MARGIN_S,
    HOLD_SKEW_FACTOR,
    MAX_QUEUE_DELAY_S,
    BondConfig,
    BondEngine,
    Role,
)
from fluxify.protocol.bondpath import Priority
from fluxify.protocol.drops import DropReason
from fluxify.protocol.header import HeaderFlag, PacketType, path_word
from fluxify.protocol.reorder import ReorderBuffer
from fluxify.protocol.session import DataSession
from tests.protocol.netsim import (
    CLIENT_V4,
    KEY,
    SERVER_V4,
    SESSION_ID,
    Cbr,
    LinkModel,
    Network,
    packet_number,
    udp_packet,
)

IP, HEARTBEAT, FEEDBACK = int(PacketType.IP), int(PacketType.HEARTBEAT), int(PacketType.FEEDBACK)
DATAGRAM_SIZE = 1200 + 50  # a 1200-byte inner packet sealed
ENGINE_OVERHEAD, NETSIM_OVERHEAD = 42, 28  # bytes beyond a datagram each counts at a bottleneck


def ipv4(proto: int, l4: bytes) -> bytes:
    total = 20 + len(l4)
    return (
        struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0, CLIENT_V4, SERVER_V4) + l4
    )


def tcp_syn(port: int) -> bytes:
    return ipv4(6, struct.pack(">HHIIBBHHH", port, 443, 1, 0, 5 << 4, 0x02, 65535, 0, 0))


def dns_query(port: int) -> bytes:
    return ipv4(17, struct.pack(">HHHH", port, 53, 20, 0) + bytes(12))


def icmp_echo(ident: int) -> bytes:
    return ipv4(1, struct.pack(">BBHHH", 8, 0, 0, ident, 1) + bytes(56))


def icmp_echo_reply(ident: int) -> bytes:
    """The reply to ``icmp_echo(ident)``, from the server's inner address to the client's."""
    request = icmp_echo(ident)
    return request[:12] + SERVER_V4 + CLIENT_V4 + bytes([0]) + request[21:]


# -- earliest arrival ---------------------------------------------------------------------


@pytest.mark.parametrize("fast", [0, 1])
def test_a_light_load_goes_on_the_lowest_delay_path_only(fast: int) -> None:
    delays = [30.0, 30.0]
    delays[fast] = 10.0
    net = Network([LinkModel(50.0, d) for d in delays])
    net.run_until(0.5)  # the first echoes tell the client which path is faster
    source = Cbr(net, 20.0)
    net.run_until(2.5, source)
    assert net.sent_on("client", fast, IP) == source.sent
    assert net.sent_on("client", 1 - fast, IP) == 0


def test_a_path_far_slower_than_the_fastest_is_kept_for_failover_only() -> None:
    """10 vs 100 ms one way: striping one flow over both measured slower than the fast path
    alone, so the slow one carries no data even when the fast one is full, and takes over when
    the fast one is cut."""
    net = Network([LinkModel(50.0, 10.0), LinkModel(50.0, 100.0)], seed=5)
    net.run_until(1.0)  # echoes and feedback: the engine learns the paths' delays
    source = Cbr(net, 60.0)  # more than the fast path carries
    net.run_until(1.5, source)
    spilled = net.sent_on("client", 1, IP)
    net.run_until(3.0, source)
    assert net.sent_on("client", 1, IP) == spilled  # nothing more since the delays were known
    assert net.client.paths[1].alive and net.client.paths[1].far
    assert any("far slower" in what for what, _ in net.client.take_events())
    source.per_ms = source.per_ms / 3  # 20 Mbit/s: what one link carries
    net.set_cut(0, True)
    before = net.sent_on("client", 1, IP)
    net.run_until(4.5, source)
    assert net.sent_on("client", 1, IP) - before > 0.5 * 20e6 / 8 / 1200  # it carries the flow


def test_a_load_above_the_fast_path_spills_to_the_slower_one() -> None:
    net = Network([LinkModel(50.0, 10.0), LinkModel(50.0, 30.0)])
    net.run_until(0.5)
    source = Cbr(net, 70.0)
    net.run_until(2.5, source)
    slow_share = net.sent_on("client", 1, IP) / source.sent
    assert 0.2 < slow_share < 0.5
    source.paused = True
    net.run_until(3.0)
    got = {n for _, n in map(packet_number, net.delivered["server"])}
    assert len(got) == source.sent


def test_two_equal_unlimited_paths_carry_the_load_on_one() -> None:
    """Two equal paths faster than the load (unshaped links), each path's datagrams read as one
    batch (UDP GRO, one socket per path), feedback every 5 ms. Packet by packet the scheduler
    would alternate the paths and the receiver would hold every other packet for its sibling
    from the other batch (old scheduler: 47 % held, every batch split). Once the rate models
    have learnt that neither path queues, one carries everything: splitting a load that one
    link carries only costs the receiver reordering and both ends smaller batches (measured
    before the rule that grows an underused model: 17 % on the second path after the ramp,
    1 batch in 3 split; with it: 0 after 2 s)."""
    client = BondEngine(
        DataSession(SESSION_ID, KEY, numbered_control=True), BondConfig(Role.CLIENT, True), 0.0
    )
    server = BondEngine(
        DataSession(SESSION_ID, KEY, numbered_control=True), BondConfig(Role.SERVER, True), 0.0
    )
    addresses = [("192.0.2.1", 40000), ("192.0.2.1", 40001)]
    client.add_path(0, "wan1", 0.0)
    client.add_path(1, "wan2", 0.0)
    client.send_handshakes(0.0)
    batch = [udp_packet(n, 1400) for n in range(32)]
    interval = 32 * 1400 * 8 / 800e6  # 800 Mbit/s offered
    now, feedback_at = 0.0, 0.0
    delivered = held_before = 0
    shares_before = [0, 0]
    split = batches = 0

    def exchange(sender: BondEngine[Any], receiver: BondEngine[Any], to_server: bool) -> int:
        got = 0
        for key, datagrams in sender.outgoing().items():
            where = addresses[key] if to_server else addresses.index(key)
            got += len(receiver.receive(where, datagrams, now + 0.0002))
        return got

    while now < 3.0:
        now += interval
        if now >= 2.0 and not batches:  # past the rate models' ramp from 20 Mbit/s
            held_before = server.reorder.reordered
            shares_before = [p.tx_packets for p in client.paths]
        out = client.send(batch, now)
        for key, datagrams in out.items():
            delivered += len(server.receive(addresses[key], datagrams, now + 0.0002))
        if now >= 2.0:
            batches += 1
            split += len(out) > 1
        if now - feedback_at >= 0.005:
            feedback_at = now
            for engine in (client, server):
                deadline = engine.next_timer()
                if deadline is not None and deadline <= now:
                    delivered += len(engine.on_timer(now))
            exchange(server, client, to_server=False)
            delivered += exchange(client, server, to_server=True)
    held = server.reorder.reordered - held_before
    shares = [p.tx_packets - b for p, b in zip(client.paths, shares_before, strict=True)]
    assert min(shares) < 0.01 * sum(shares)  # one path carries the load
    assert held < 0.01 * batches * len(batch)
    assert split < 0.01 * batches
    assert delivered == client.codec.last_seq  # all of it, once


def test_a_new_session_over_two_unshaped_paths_settles_on_one_within_a_few_feedbacks() -> None:
    """A new session's rate models start at 20 Mbit/s. Over two unshaped paths offered 600
    Mbit/s the first one counts as full and every other batch spills to the second until the
    models learn better: with 8 % growth per feedback that took ~1 s in memory and 1-2 s in the
    lab, and a 6 s bench run paid for the reordering. A path that shows no queueing carries
    more than it delivers, so its model jumps to 1.5 x its delivery until it first queues, and
    the load settles on one path once the first delivery rate is measured (RATE_WINDOW_S)."""
    fast = LinkModel(rate_mbit=3000.0, delay_ms=0.3, queue_limit_ms=5.0)
    net = Network([fast, fast])
    net.run_until(0.3)
    source = Cbr(net, 600.0)
    net.run_until(0.52, source)  # 0.22 s of traffic: 11 feedback ticks
    before = [net.sent_on("client", i, IP) for i in range(2)]
    net.run_until(1.02, source)
    shares = [net.sent_on("client", i, IP) - b for i, b in enumerate(before)]
    # (growing 8 % per feedback alone: 0.50 on the second path; with the model at least 1.08 x
    # its delivery but no start-up: 0.03)
    assert min(shares) < 0.01 * sum(shares)
    source.paused = True
    net.run_until(1.5)
    got = {n for _, n in map(packet_number, net.delivered["server"])}
    assert len(got) == source.sent


def test_unequal_paths_still_share_the_load_by_their_rates() -> None:
    """Runs do not skew the split: 60 + 20 Mbit/s loaded at 70 puts about a quarter on the
    slow path, and every packet arrives (measured: 0.27)."""
    net = Network([LinkModel(60.0, 10.0), LinkModel(20.0, 10.0)], seed=4)
    net.run_until(0.5)
    source = Cbr(net, 70.0)
    net.run_until(3.0, source)
    slow_share = net.sent_on("client", 1, IP) / source.sent
    assert 0.15 < slow_share < 0.35
    source.paused = True
    net.run_until(3.5)
    got = {n for _, n in map(packet_number, net.delivered["server"])}
    assert len(got) == source.sent


# -- selective duplication ----------------------------------------------------------------


def test_critical_packets_go_on_two_paths_and_arrive_once() -> None:
    net = Network([LinkModel(50.0, 10.0), LinkModel(50.0, 10.0)])
    net.run_until(0.5)
    critical = [f(i) for i in range(10) for f in (tcp_syn, dns_query, icmp_echo)]
    bulk = [udp_packet(i) for i in range(30)]
    for i in range(30):
        net.send("client", [critical[i], bulk[i]])
        net.run_until(net.now + 0.01)
    net.run_until(net.now + 0.5)
    duplicated = sum(p.duplicated for p in net.client.snapshot(net.now).paths)
    assert duplicated == len(critical)  # and no bulk packet
    assert net.sent_on("client", 0, IP) + net.sent_on("client", 1, IP) == 60 + 30
    assert sorted(net.delivered["server"]) == sorted(critical + bulk)  # each once
    assert net.server.codec.drops[DropReason.DUPLICATE] == len(critical)


def test_a_second_copy_that_loses_the_race_counts_on_its_path_not_as_loss() -> None:
    """Pings over two equal paths that lose nothing: every echo goes on both, one copy of each
    is dropped as a duplicate, yet each path's receiver counts what its path brought, so the
    sender sees no loss on either (before: 18-31 % reported loss on the path whose copies came
    second, which also kept its rate model from growing). A replay of such a copy is not
    counted and costs no decryption."""
    net = Network([LinkModel(1000.0, 1.0), LinkModel(1000.0, 1.0)])
    net.run_until(0.5)
    for sequence in range(50):
        start = net.now
        net.send("client", [icmp_echo(sequence)])
        net.run_until(start + 0.0015)
        net.send("server", [icmp_echo_reply(sequence)])
        net.run_until(start + 0.2)
    assert net.server.codec.drops[DropReason.DUPLICATE] >= 50
    assert all(link.dropped == 0 for link in net.up + net.down)
    for engine in (net.client, net.server):
        for report in engine.snapshot(net.now).paths:
            assert report.loss == 0.0, (report.label, report.loss)
    # one more echo by hand: both copies counted once each, a replay of either not at all
    out = net.client.send([icmp_echo(50)], net.now)
    assert len(out) == 2
    counted = {}
    for index, datagrams in out.items():
        key = net.server_keys[index]
        net.server.receive(key, datagrams, net.now)
        path = net.server.path(key)
        assert path is not None
        counted[index] = path.rx_packets
        net.server.receive(key, datagrams, net.now)  # replayed
        assert path.rx_packets == counted[index]


def test_with_one_primary_and_a_backup_critical_packets_are_not_duplicated() -> None:
    net = Network([LinkModel(50.0, 10.0), LinkModel(50.0, 10.0, priority=Priority.BACKUP)])
    net.run_until(0.5)
    net.send("client", [tcp_syn(i) for i in range(5)])
    net.run_until(1.0)
    assert sum(p.duplicated for p in net.client.snapshot(net.now).paths) == 0
    assert net.sent_on("client", 1, IP) == 0


def test_a_path_carrying_only_duplicates_is_not_declared_dead() -> None:
    """The second copy is dropped as a duplicate but still acknowledges its path."""
    net = Network([LinkModel(50.0, 10.0), LinkModel(50.0, 30.0)])
    net.run_until(0.5)
    for i in range(20):  # a SYN every 50 ms: its first copy on the fast path, the second slow
        net.send("client", [tcp_syn(i)])
        net.run_until(net.now + 0.05)
    assert net.client.take_events() == []


# -- the reorder hold ---------------------------------------------------------------------


class RecordingReorder(ReorderBuffer):
    """Remembers how long each held packet was allowed to wait."""

    def __init__(self, net: Network, after: float) -> None:
        super().__init__()
        self.net, self.after, self.holds = net, after, list[float]()

    def push(self, number: int, packet: bytes, deadline: float) -> list[bytes] | None:
        if self.net.now >= self.after:
            self.holds.append(deadline - self.net.now)
        return super().push(number, packet, deadline)


@pytest.mark.parametrize(
    ("delays", "jitter_ms"), [((10.0, 30.0), 0.0), ((10.0, 30.0), 3.0), ((10.0, 40.0), 5.0)]
)
def test_the_hold_is_at_most_skew_plus_jitter_plus_a_margin(
    delays: tuple[float, float], jitter_ms: float
) -> None:
    net = Network([LinkModel(50.0, d, jitter_ms) for d in delays], seed=3)
    recorder = RecordingReorder(net, after=2.5)  # past the engine's 2 s start-up hold
    net.server.reorder = recorder
    source = Cbr(net, 65.0)
    holds = []
    while net.now < 3.5:
        net.run_until(net.now + 0.25, source)
        if net.now >= 2.5:
            holds.append(net.server.snapshot(net.now).reorder.hold_ms)
    skew_ms = delays[1] - delays[0]
    margin_ms = 3.0
    # what each held packet may wait: 1.5 x (skew + jitter) + 5 ms, generous on purpose (a gap
    # known lost is released at once, the deadline is the fallback) (measured: 21.5, 26.6, 34 ms)
    bound_ms = HOLD_SKEW_FACTOR * (skew_ms + 2 * jitter_ms) + 1000 * HOLD_MARGIN_S
    assert recorder.holds and max(recorder.holds) * 1000 <= bound_ms
    # the reported ceiling is relative to the earliest arrival ever, so it also spans the
    # fast path's own queue (up to MAX_QUEUE_DELAY_S) (measured: 27.2, 27.0, 33.4 ms)
    assert max(holds) <= skew_ms + 2 * jitter_ms + 1000 * MAX_QUEUE_DELAY_S + margin_ms
    assert net.server.snapshot(net.now).reorder.released_late == 0  # and it is long enough


# -- the rate model -------------------------------------------------------------------------


def rates_under_load(rates: tuple[float, float], offered_mbit: float, seed: int = 5) -> list[float]:
    """The client's rate model of each path after 3 s at ``offered_mbit``, in the link
    model's units (Mbit/s of datagrams + 28 bytes)."""
    net = Network([LinkModel(r, 10.0, 0.5) for r in rates], seed=seed)
    source = Cbr(net, offered_mbit)
    net.run_until(3.0, source)
    scale = (DATAGRAM_SIZE + NETSIM_OVERHEAD) / (DATAGRAM_SIZE + ENGINE_OVERHEAD)
    return [p.rate * 8 / 1e6 * scale for p in net.client.paths]


@pytest.mark.parametrize(
    ("rates", "offered", "seed"),
    [((50.0, 50.0), 95.0, 5), *(((80.0, 20.0), 93.0, seed) for seed in (5, 4, 6, 8))],
    ids=["2x50-saturated", "80+20-saturated", "80+20-seed-4", "80+20-seed-6", "80+20-seed-8"],
)
def test_estimated_rates_are_within_10_percent_of_the_links(
    rates: tuple[float, float], offered: float, seed: int
) -> None:
    """(Seeds 4, 6 and 8 failed before the growth of a path shown no queue was capped at 1.08 x
    its delivery: the slow path, carrying 12 of its 20 Mbit/s, grew to 25-29 in 3 s.)"""
    for estimate, real in zip(rates_under_load(rates, offered, seed), rates, strict=True):
        assert estimate == pytest.approx(real, rel=0.10)


def test_at_85_percent_the_fast_path_is_filled_and_modelled_and_the_slow_one_carries_the_rest() -> (
    None
):
    """80 + 20 at 85: the fast path is filled to its capacity (its model within 10 %), the slow
    one takes the rest and its model, not shown its capacity, stays above what it carries (it
    grows while the path shows no queue: measured 23 for a 20 Mbit/s link carrying 12; this
    case used to check it against 20 as well, which the initial 20 Mbit/s model passed by
    itself)."""
    net = Network([LinkModel(80.0, 10.0, 0.5), LinkModel(20.0, 10.0, 0.5)], seed=5)
    source = Cbr(net, 85.0)
    net.run_until(2.0, source)
    carried_before = net.client.paths[1].tx_bytes
    net.run_until(3.0, source)
    slow_carried = (net.client.paths[1].tx_bytes - carried_before) * 8 / 1e6  # over 1 s
    scale = (DATAGRAM_SIZE + NETSIM_OVERHEAD) / (DATAGRAM_SIZE + ENGINE_OVERHEAD)
    fast_model, slow_model = (p.rate * 8 / 1e6 * scale for p in net.client.paths)
    assert fast_model == pytest.approx(80.0, rel=0.10)
    assert 5.0 < slow_carried < 20.0
    assert slow_model > slow_carried


def test_a_path_loaded_below_its_capacity_has_a_rate_model_between_its_load_and_its_rate() -> None:
    """2 x 50 at 80 offered, equal delays: the path the load starts on is filled, the other
    carries the rest and queues a little (bursts, jitter), so nothing shows its model its
    capacity (it grows when a path drains faster than modelled by more than the noise, or
    shows no queue at all while the model made packets wait, then up to 1.08 x what it
    delivers). Each model then carries its path's load and is never above the link."""
    net = Network([LinkModel(50.0, 10.0, 0.5) for _ in range(2)], seed=5)
    source = Cbr(net, 80.0)
    net.run_until(2.0, source)
    before = [(p.tx_bytes, p.tx_packets) for p in net.client.paths]
    net.run_until(3.0, source)
    for path, (sent_bytes, sent_packets) in zip(net.client.paths, before, strict=True):
        # over 1 s, in the model's units: datagrams + ENGINE_OVERHEAD each
        wire = path.tx_bytes - sent_bytes + (path.tx_packets - sent_packets) * ENGINE_OVERHEAD
        carried, model = wire * 8 / 1e6, path.rate * 8 / 1e6
        assert 20.0 < carried < 55.0
        assert carried <= model
        scale = (DATAGRAM_SIZE + NETSIM_OVERHEAD) / (DATAGRAM_SIZE + ENGINE_OVERHEAD)
        assert model * scale <= 50.0 * 1.10  # the link's units


# -- v1 mode ----------------------------------------------------------------------------------


def test_v1_heartbeats_every_2_s_round_robin_and_never_feedback() -> None:
    net = Network([LinkModel(50.0, 10.0), LinkModel(50.0, 30.0)], v2=False)
    net.run_until(9.0)
    before = [net.sent_on("client", i, HEARTBEAT) for i in range(2)]
    net.run_until(109.0)
    after = [net.sent_on("client", i, HEARTBEAT) for i in range(2)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [50, 50]
    up = Cbr(net, 20.0)
    net.run_until(111.0, up)
    assert net.sent_on("client", 0, IP) - net.sent_on("client", 1, IP) in (-1, 0, 1)
    down = Cbr(net, 20.0, side="server")
    net.run_until(113.0, down)
    net.run_until(114.0)
    assert sum(n for (_, _, t), n in net.tally.items() if t == FEEDBACK) == 0
    assert len(net.delivered["server"]) == up.sent
    assert len(net.delivered["client"]) == down.sent


def test_v1_datagrams_leave_the_v2_reserved_bytes_zero() -> None:
    """A Go v1 peer's view: bytes 13..21 of every header are zero, control packets seq 0."""
    client = BondEngine(DataSession(SESSION_ID, KEY), BondConfig(Role.CLIENT, v2=False), 0.0)
    client.add_path(0, "wan1", 0.0)
    client.send_handshakes(0.0)
    sent = client.send([udp_packet(1)], 0.0)[0]
    client.on_timer(0.0)  # the first heartbeat
    sent += client.outgoing().get(0, [])
    assert sent and all(d[13:22] == bytes(9) for d in sent)
    go_server = DataSession(SESSION_ID, KEY)  # what a Go v1 server does with them
    assert [go_server.open(d) is not None for d in sent] == [True] * len(sent)
    # and a Go client's datagrams are accepted by our v1 server engine
    server = BondEngine(DataSession(SESSION_ID, KEY), BondConfig(Role.SERVER, v2=False), 0.0)
    go_client = DataSession(SESSION_ID, KEY)
    address = ("198.51.100.7", 5555)
    packet = udp_packet(7)
    sealed = go_client.seal_ip(packet)
    assert sealed is not None
    ready = server.receive(address, [go_client.seal_handshake(), go_client.seal_heartbeat(1)], 0.1)
    assert ready == []
    assert server.receive(address, [sealed], 0.1) == [packet]
    echoes = server.outgoing()[address]
    assert [go_client.open(e) is not None for e in echoes] == [True]
    assert all(e[13:22] == bytes(9) for e in echoes)


# -- malformed feedback ---------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01" + bytes(20), b"\x11" + bytes(21 * 17)])
def test_malformed_feedback_is_counted_not_raised(payload: bytes) -> None:
    server = BondEngine(
        DataSession(SESSION_ID, KEY, numbered_control=True), BondConfig(Role.SERVER, v2=True), 0.0
    )
    peer = DataSession(SESSION_ID, KEY, numbered_control=True)
    fields = int(HeaderFlag.PATH_FIELDS)
    datagram = peer.seal_control(FEEDBACK, payload, fields, path_word(0, 1), 1000)
    assert server.receive(("198.51.100.7", 5555), [datagram], 0.1) == []
    assert server.codec.drops.snapshot() == {"malformed_control": 1}
    assert server.codec.drops[DropReason.MALFORMED_CONTROL] == 1


def _sent_numbers(rate: float, packets: int) -> dict[int, list[int]]:
    """Session numbers per path of one ``send`` of ``packets`` over two equal paths whose
    models are at ``rate`` bytes/s."""
    client = BondEngine(
        DataSession(SESSION_ID, KEY, numbered_control=True), BondConfig(Role.CLIENT, True), 0.0
    )
    for index in range(2):
        client.add_path(index, f"wan{index + 1}", 0.0).rate = rate
    client.outgoing()
    out = client.send([udp_packet(n, 1400) for n in range(packets)], 0.0)
    return {key: [struct.unpack_from(">I", d, 6)[0] for d in run] for key, run in out.items()}


def test_one_send_stays_on_one_path_while_it_has_room() -> None:
    """A batch read from the TUN is not split while its path takes it within its full queue:
    256 packets on two equal 1 Gbit/s models (3 ms of queue) all go on one. Split, each path
    would go out in half batches (GSO sends, GRO reads, the receiver holding one path's run for
    the other's); over two unshaped links that made the bond slower than one of them (measured
    before: 256 split 84 / 172)."""
    numbers = _sent_numbers(125e6, 256)
    assert list(numbers) == [0]
    assert numbers[0] == list(range(1, 257))


def test_within_one_send_each_path_carries_one_run_of_numbers() -> None:
    """Each path's datagrams of one ``send`` go out in one system call: a path given a run,
    left for another and given a second run would put that second run on the wire ahead of
    the one in between. 400 packets over two equal 100 Mbit/s models (its full 25 ms of queue
    is ~215): one run each (the old rule's case: wan1 1-84, wan2 85-256 at 1 Gbit/s; without
    the rule wan1 also took 253-256)."""
    numbers = _sent_numbers(12.5e6, 400)
    assert sorted(numbers) == [0, 1]
    for run in numbers.values():
        assert run == list(range(run[0], run[0] + len(run)))
    assert 150 < len(numbers[0]) < 300
