"""The delay emulator: the in-order deadline rule alone, then for real in a test bed.

Tolerances: ``python -m fluxify.lab.delay_bench`` measures the emulator's error on an idle 2-core
machine at +0.03 ms median and +0.2 ms p99 (UDP at 100 Mbit/s). The tests allow 3 ms on the
median because CI runs other suites beside them on the same 2 cores, and ping adds its own
wake-ups; a broken emulator is off by whole milliseconds (or by the full delay).
"""

import os
import re
import statistics
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxify.lab import delay
from fluxify.lab.delay_bench import measure_owd
from fluxify.lab.delay_process import WAKE_MARGIN_S, DelayLine
from fluxify.lab.iperf import iperf
from fluxify.lab.testbed import Testbed, build_testbed

MEDIAN_TOLERANCE_MS = 3.0
EARLY_TOLERANCE_MS = WAKE_MARGIN_S * 1000 + 0.1  # released early by design, at most this much
PING_TIME = re.compile(r"time=([\d.]+) ms")
T = TypeVar("T")

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces")


# The deadline rule (pure) ---------------------------------------------------------------------


@given(
    gaps=st.lists(st.floats(min_value=0, max_value=0.01), min_size=1, max_size=200),
    delay_ms=st.floats(min_value=0, max_value=100),
    jitter_ms=st.floats(min_value=0, max_value=50),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_deadlines_keep_order_and_stay_within_delay_plus_minus_jitter(
    gaps: list[float], delay_ms: float, jitter_ms: float, seed: int
) -> None:
    line = DelayLine(delay_ms / 1000, jitter_ms / 1000, seed)
    now, last = 100.0, float("-inf")
    low, high = max(0.0, delay_ms - jitter_ms) / 1000, (delay_ms + jitter_ms) / 1000
    for gap in gaps:
        now += gap
        deadline = line.admit(now)
        assert deadline >= last  # never reordered
        assert low - 1e-9 <= deadline - now <= high + 1e-9
        last = deadline


def test_without_jitter_every_packet_gets_exactly_the_delay() -> None:
    line = DelayLine(0.02)
    assert [line.admit(t) - t for t in (1.0, 1.001, 1.5)] == pytest.approx([0.02] * 3)


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="delay and jitter"):
        DelayLine(-0.001)


def test_steering_marks_and_untracks_only_the_active_directions() -> None:
    up = delay.render_steering([delay.UP], ["lan", "lan2"], "wan")
    assert 'iifname { "lan", "lan2" } meta mark set 0x101 notrack' in up
    assert "wan" not in up  # the download path keeps its conntrack and NAT untouched
    down = delay.render_steering([delay.DOWN], ["lan"], "wan")
    assert 'iifname "wan" meta mark set 0x102' in down
    assert 'iifname "dlydn" notrack' in down
    assert '"lan"' not in down


# In a test bed ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    if os.geteuid() != 0:
        pytest.skip("needs root: builds network namespaces")
    with build_testbed(uplinks=2, prefix="fxdl") as built:
        yield built


@pytest.fixture
def clean(bed: Testbed) -> Iterator[Testbed]:
    """The bed, with every delay and shaper removed again after the test."""
    try:
        yield bed
    finally:
        for uplink in bed.topology.uplinks:
            bed.clear_delay(uplink.number)
            bed.unshape(bed.topology.client_ns, uplink.ifname)
            bed.unshape(uplink.isp_ns, uplink.isp_lan_ifname)


def ping_times_ms(bed: Testbed, number: int, count: int = 40) -> list[float]:
    t = bed.topology
    argv = ["ping", "-n", "-i", "0.02", "-c", str(count), "-I", t.uplink(number).ifname]
    done = bed.run(t.client_ns, [*argv, str(t.server_v4.ip)], timeout=count + 10)
    return [float(x) for x in PING_TIME.findall(done.stdout)]


@pytest.mark.root
@requires_root
def test_ten_ms_each_way_makes_a_twenty_ms_ping(clean: Testbed) -> None:
    clean.set_delay(1, 10)
    times = ping_times_ms(clean, 1)
    assert len(times) == 40  # NAT and routing still work through both TUNs
    assert statistics.median(times) == pytest.approx(20, abs=MEDIAN_TOLERANCE_MS)
    assert min(times) >= 20 - 2 * EARLY_TOLERANCE_MS
    assert statistics.median(ping_times_ms(clean, 2, count=10)) < 2  # the other ISP: no delay


@pytest.mark.root
@requires_root
def test_one_direction_and_ipv6(clean: Testbed) -> None:
    t = clean.topology
    clean.set_delay(1, 20, direction="up")
    assert statistics.median(ping_times_ms(clean, 1)) == pytest.approx(20, abs=MEDIAN_TOLERANCE_MS)
    argv = ["ping", "-n", "-c", "5", "-i", "0.05", "-I", "wan1", str(t.server_v6.ip)]
    v6 = [float(x) for x in PING_TIME.findall(clean.run(t.client_ns, argv).stdout)]
    assert len(v6) == 5
    assert statistics.median(v6) == pytest.approx(20, abs=MEDIAN_TOLERANCE_MS)


@pytest.mark.root
@requires_root
def test_clearing_removes_the_delay_and_its_rules(clean: Testbed) -> None:
    isp = clean.topology.uplink(1).isp_ns
    clean.set_delay(1, 15)
    counters = clean.clear_delay(1)
    assert set(counters) == {"up", "down"}
    assert statistics.median(ping_times_ms(clean, 1, count=10)) < 2
    assert "lookup" not in clean.run(isp, ["ip", "rule", "show", "priority", "1001"]).stdout
    assert "dlyup" not in clean.run(isp, ["ip", "link"]).stdout
    assert delay.STEER_TABLE not in clean.run(isp, ["nft", "list", "tables"]).stdout


def first_good(measure: Callable[[], T], good: Callable[[T], bool], attempts: int = 3) -> T:
    """The first of up to ``attempts`` measurements that is ``good``, else the last one.

    For bounds a loaded machine can break for a moment (a late wake-up, a CPU hog beside
    iperf3): a broken emulator fails every attempt, a busy machine rarely twice in a row.
    Properties no load can break (order, the early bound, loss at low rates) are asserted on
    every attempt, not through this.
    """
    result = measure()
    for _ in range(attempts - 1):
        if good(result):
            break
        result = measure()
    return result


@pytest.mark.root
@requires_root
def test_jitter_is_bounded_and_never_reorders(clean: Testbed) -> None:
    clean.set_delay(1, 10, jitter_ms=5, direction="up")

    def measure() -> dict[str, Any]:
        summary = measure_owd(clean, 1, rate_mbit=5, seconds=2)
        assert summary["reordered"] == 0  # the in-order rule: no load can break it
        assert summary["lost"] == 0 and summary["received"] > 200, summary
        assert summary["owd_ms"]["p0"] >= 5 - EARLY_TOLERANCE_MS  # never released early
        return summary

    summary = first_good(measure, lambda s: s["owd_ms"]["p90"] <= 15 + MEDIAN_TOLERANCE_MS)
    owd = summary["owd_ms"]
    assert owd["p90"] <= 15 + MEDIAN_TOLERANCE_MS, owd
    assert owd["p90"] - owd["p1"] > 3  # the jitter is really there (load only widens it)


@pytest.mark.root
@requires_root
def test_one_way_delay_holds_under_100_mbit(clean: Testbed) -> None:
    clean.set_delay(1, 20, direction="up")

    def measure() -> dict[str, Any]:
        summary = measure_owd(clean, 1, rate_mbit=100, seconds=2)
        assert summary["reordered"] == 0
        assert summary["owd_ms"]["p0"] >= 20 - EARLY_TOLERANCE_MS
        return summary

    def holds(summary: dict[str, Any]) -> bool:
        median = summary["owd_ms"]["p50"]
        return summary["lost"] == 0 and abs(median - 20) <= MEDIAN_TOLERANCE_MS

    summary = first_good(measure, holds)
    assert summary["lost"] == 0, summary
    assert summary["owd_ms"]["p50"] == pytest.approx(20, abs=MEDIAN_TOLERANCE_MS)


@pytest.mark.root
@requires_root
def test_shaping_and_delay_combine(clean: Testbed) -> None:
    t = clean.topology
    clean.shape_uplink(1, 50)
    clean.set_delay(1, 10)
    assert min(ping_times_ms(clean, 1, count=10)) >= 20 - 2 * EARLY_TOLERANCE_MS

    def measure() -> float:
        result = iperf(
            clean,
            client_ns=t.client_ns,
            server_ns=t.server_ns,
            target=str(t.server_v4.ip),
            seconds=4,
            bind_dev="wan1",
        )
        assert result.mbit_s <= 50  # tbf's cap holds however busy the machine is
        return result.mbit_s

    # Goodput sits below the 50 Mbit/s of IP bytes tbf allows; 70 % leaves room for TCP's
    # start over a 20 ms RTT, and the best of three runs for a moment of CPU contention.
    mbit_s = first_good(measure, lambda mbit: mbit >= 0.7 * 50)
    assert mbit_s >= 0.7 * 50


@pytest.mark.root
@requires_root
def test_teardown_stops_the_emulators() -> None:
    with build_testbed(uplinks=1, prefix="fxdt") as bed:
        bed.set_delay(1, 5)
        processes = [running.process for running in bed.delays.values()]
        assert all(process.poll() is None for process in processes)
    assert all(process.poll() is not None for process in processes)
