"""The session table and address pool: unique non-zero ids, no live address reused, reconnects."""

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxify.errors import PoolExhaustedError, SessionRefusedError
from fluxify.server.sessions import POOL_SIZE, RemovalReason, Session, SessionTable


def test_first_session_gets_dot_two_a_32_byte_key_and_a_nonzero_id() -> None:
    table = SessionTable()
    session = table.open("alice", now=1.0)
    assert session.client_ip == IPv4Address("10.8.0.2")
    assert session.client_ip6 == IPv6Address("fd00:8::2")
    assert len(session.key) == 32 and 0 < session.session_id < 2**32
    assert table.by_id(session.session_id) is session
    assert table.by_identity("alice") is session


def test_v6_address_follows_the_go_decimal_quirk() -> None:
    table = SessionTable()
    sessions = [table.open(f"c{i}", now=0.0) for i in range(9)]
    assert sessions[8].client_ip == IPv4Address("10.8.0.10")
    assert sessions[8].client_ip6 == IPv6Address("fd00:8::10")  # 0x10, as Go writes it
    assert all(s.client_ip6 != IPv6Address("fd00:8::a") for s in sessions)


def test_reconnect_replaces_the_session_and_keeps_its_addresses() -> None:
    table = SessionTable()
    removed: list[tuple[int, RemovalReason]] = []
    table.on_removed(lambda s, reason: removed.append((s.session_id, reason)))
    first = table.open("alice", now=1.0)
    table.open("bob", now=1.0)
    again = table.open("alice", now=2.0)
    assert (again.client_ip, again.client_ip6) == (first.client_ip, first.client_ip6)
    assert again.session_id != first.session_id and again.key != first.key
    assert table.by_id(first.session_id) is None
    assert table.by_identity("alice") is again
    assert removed == [(first.session_id, RemovalReason.REPLACED)]
    assert len(table) == 2


def test_full_pool_refuses_and_a_freed_address_is_reused() -> None:
    table = SessionTable()
    sessions = [table.open(f"client{i}", now=0.0) for i in range(POOL_SIZE)]
    assert POOL_SIZE == 249  # 10.8.0.2 .. 10.8.0.250
    assert {s.client_ip for s in sessions} == {IPv4Address(f"10.8.0.{n}") for n in range(2, 251)}
    with pytest.raises(PoolExhaustedError, match=r"all 249 addresses .*10\.8\.0\.2-10\.8\.0\.250"):
        table.open("one-too-many", now=0.0)
    assert issubclass(PoolExhaustedError, SessionRefusedError)
    table.open("client7", now=1.0)  # a reconnect still works on a full pool
    table.close(sessions[100].session_id)
    late = table.open("one-too-many", now=2.0)
    assert late.client_ip == sessions[100].client_ip


def test_addresses_are_handed_out_round_robin_so_a_freed_one_is_reused_last() -> None:
    table = SessionTable()
    a = table.open("a", now=0.0)
    table.open("b", now=0.0)
    table.close(a.session_id)
    assert table.open("c", now=0.0).client_ip == IPv4Address("10.8.0.4")


def test_a_session_the_data_plane_found_idle_leaves_with_that_reason() -> None:
    table = SessionTable()
    gone: list[tuple[Session, RemovalReason]] = []
    table.on_removed(lambda s, reason: gone.append((s, reason)))
    idle = table.open("idle", now=0.0)
    busy = table.open("busy", now=0.0)
    assert table.close(idle.session_id, RemovalReason.EXPIRED) is idle
    assert gone == [(idle, RemovalReason.EXPIRED)]
    assert table.by_identity("idle") is None and table.by_identity("busy") is busy
    assert table.open("next", now=1.0).client_ip != busy.client_ip


def test_opened_hook_sees_each_new_session_after_the_replaced_one_left() -> None:
    table = SessionTable()
    events: list[str] = []
    table.on_opened(lambda s: events.append(f"open {s.identity} {len(table)}"))
    table.on_removed(lambda s, reason: events.append(f"remove {s.identity}"))
    table.open("alice", now=0.0)
    table.open("alice", now=1.0)
    assert events == ["open alice 1", "remove alice", "open alice 1"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["open", "close"]), st.integers(0, 300)),
        max_size=400,
    )
)
def test_invariants_hold_under_any_sequence(ops: list[tuple[str, int]]) -> None:
    table = SessionTable()
    now = 0.0
    for op, n in ops:
        now += 1.0
        if op == "open":
            try:
                table.open(f"id{n}", now=now)
            except PoolExhaustedError:
                assert len(table) == POOL_SIZE
        elif op == "close" and len(table):
            victim = sorted(table, key=lambda s: s.session_id)[n % len(table)]
            table.close(victim.session_id)
        live = list(table)
        assert len({s.session_id for s in live}) == len(live)
        assert all(s.session_id != 0 for s in live)
        assert len({s.client_ip for s in live}) == len(live)
        assert len({s.identity for s in live}) == len(live)
        assert len({s.client_ip6 for s in live}) == len(live)
        for s in live:
            assert table.by_id(s.session_id) is s and table.by_identity(s.identity) is s
