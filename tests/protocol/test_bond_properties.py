"""Bond engine invariants over a terrible network (Hypothesis over seeds and link models):
every packet is delivered exactly once or counted lost, and order is kept per inner flow."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocol.netsim import Cbr, LinkModel, Network, packet_number

RUN_S = 2.5  # virtual seconds of traffic: past the engine's 2 s start-up hold
DRAIN_S = 1.0

links = st.builds(
    LinkModel,
    rate_mbit=st.sampled_from([4.0, 6.0, 10.0]),  # small: the engine is per packet
    delay_ms=st.sampled_from([5.0, 10.0, 25.0, 40.0]),
    jitter_ms=st.sampled_from([0.0, 1.0, 4.0]),
    loss=st.sampled_from([0.0, 0.005, 0.02]),
    reorder=st.sampled_from([0.0, 0.01]),
)
PROPERTY = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def transfer(
    models: list[LinkModel], seed: int, rate_mbit: float, side: str, run_s: float = RUN_S
) -> tuple[Network, Cbr]:
    net = Network(models, seed=seed)
    net.run_until(0.2)
    source = Cbr(net, rate_mbit, side=side, flows=3)
    net.run_until(0.2 + run_s, source)
    net.run_until(net.now + DRAIN_S)
    return net, source


def receiver_of(net: Network, side: str) -> str:
    return "server" if side == "client" else "client"


def numbers(net: Network, receiver: str) -> list[tuple[int, int]]:
    return [packet_number(p) for p in net.delivered[receiver]]


def inversions(delivered: list[tuple[int, int]]) -> int:
    """Packets delivered after a later packet of their own flow."""
    highest: dict[int, int] = {}
    count = 0
    for flow, number in delivered:
        if number < highest.get(flow, -1):
            count += 1
        else:
            highest[flow] = number
    return count


@PROPERTY
@given(
    models=st.lists(links, min_size=2, max_size=3),
    seed=st.integers(0, 2**32 - 1),
    load=st.sampled_from([0.3, 0.6, 0.9]),
    side=st.sampled_from(["client", "server"]),
)
def test_every_packet_is_delivered_exactly_once_or_counted_lost(
    models: list[LinkModel], seed: int, load: float, side: str
) -> None:
    rate = load * sum(m.rate_mbit for m in models) * 0.9  # inner rate: the tunnel adds ~6 %
    net, source = transfer(models, seed, rate, side)
    receiver = receiver_of(net, side)
    got = [number for _, number in numbers(net, receiver)]
    assert len(got) == len(set(got)), "a packet reached the TUN twice"
    assert set(got) <= set(range(source.sent))
    missing = set(range(source.sent)) - set(got)
    # The receiver can count a gap only below a number it received; the reorder buffer's start
    # is its first packet, so packets numbered below that one come "late" without a lost gap.
    first = got[0]
    before_start = sum(1 for n in got if n < first)
    counted = [n for n in missing if n < max(got)]
    r = getattr(net, receiver).snapshot(net.now).reorder
    assert r.held == 0
    assert len(counted) == r.lost - r.released_late + before_start
    assert len(missing) - len(counted) <= 50  # only the tail end may be lost uncounted


@PROPERTY
@given(
    models=st.lists(links, min_size=2, max_size=3),
    seed=st.integers(0, 2**32 - 1),
    side=st.sampled_from(["client", "server"]),
)
def test_out_of_order_deliveries_are_exactly_those_counted_released_late(
    models: list[LinkModel], seed: int, side: str
) -> None:
    rate = 0.7 * sum(m.rate_mbit for m in models) * 0.9
    net, _ = transfer(models, seed, rate, side)
    receiver = receiver_of(net, side)
    r = getattr(net, receiver).snapshot(net.now).reorder
    assert inversions(numbers(net, receiver)) <= r.released_late


@settings(PROPERTY, max_examples=6)
@given(
    delays=st.lists(st.sampled_from([5.0, 10.0, 20.0, 40.0]), min_size=2, max_size=3),
    jitter=st.sampled_from([0.0, 1.0, 3.0]),
    seed=st.integers(0, 2**32 - 1),
    side=st.sampled_from(["client", "server"]),
)
def test_without_loss_or_reordering_within_a_path_every_flow_arrives_in_order(
    delays: list[float], jitter: float, seed: int, side: str
) -> None:
    # Links faster than the rate model's start (20 Mbit/s), which would over-fill slower ones
    # for the first few hundred milliseconds (their queues would outgrow the start-up hold).
    models = [LinkModel(25.0, delay, jitter) for delay in delays]
    rate = 0.6 * 25.0 * len(models) * 0.9
    net, source = transfer(models, seed, rate, side, run_s=1.2)
    receiver = receiver_of(net, side)
    assert sum(link.dropped for link in net.up + net.down) == 0  # the engine queues < the limit
    delivered = numbers(net, receiver)
    assert len(delivered) == source.sent
    r = getattr(net, receiver).snapshot(net.now).reorder
    first = delivered[0][1]
    before_start = sum(1 for _, n in delivered if n < first)  # see the start-up test below
    assert (r.lost, r.released_late) == (0, before_start)
    assert inversions(delivered) <= before_start
    assert all(n > first for _, n in delivered[before_start + 1 :])  # after the start: in order
