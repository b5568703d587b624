"""The control plane's admission bookkeeping on a virtual clock: caps and the rate per source."""

from fluxify.server.admission import RATE_FORGET_EVERY_S, Admission, ConnectionOutcome

NAT = "198.51.100.7"
OTHER = "203.0.113.9"


def test_a_source_gets_its_burst_then_its_rate_of_new_connections() -> None:
    admission = Admission(new_per_source_per_s=10.0, new_per_source_burst=40.0, max_per_source=100)
    outcomes = []
    for _ in range(45):
        outcome = admission.admit(NAT, 100.0)
        outcomes.append(outcome)
        if outcome is None:
            admission.release(NAT)  # a connection that came and went: the rate still counts it
    assert outcomes[:40] == [None] * 40
    assert outcomes[40:] == [ConnectionOutcome.OVER_SOURCE_RATE] * 5
    assert admission.totals[ConnectionOutcome.OVER_SOURCE_RATE] == 5
    # refused ones took no token: 0.15 s later there is one (and a half) again
    assert admission.admit(NAT, 100.15) is None
    assert admission.admit(NAT, 100.15) is ConnectionOutcome.OVER_SOURCE_RATE
    # another address (another client) is not affected
    assert admission.admit(OTHER, 100.15) is None


def test_the_bucket_refills_to_its_burst_and_no_further() -> None:
    admission = Admission(new_per_source_per_s=10.0, new_per_source_burst=5.0)
    for _ in range(5):
        assert admission.admit(NAT, 0.0) is None
    assert admission.admit(NAT, 0.0) is ConnectionOutcome.OVER_SOURCE_RATE
    admitted = sum(admission.admit(NAT, 3600.0) is None for _ in range(20))
    assert admitted == 5  # an hour of silence earns the burst, not 36 000 connections


def test_the_caps_on_open_connections_come_before_the_rate() -> None:
    admission = Admission(max_per_source=2, new_per_source_per_s=1.0, new_per_source_burst=10.0)
    assert admission.admit(NAT, 0.0) is None
    assert admission.admit(NAT, 0.0) is None
    assert admission.admit(NAT, 0.0) is ConnectionOutcome.OVER_SOURCE_CAP
    admission.release(NAT)
    assert admission.admit(NAT, 0.0) is None
    assert admission.open == 2


def test_buckets_of_sources_gone_quiet_are_forgotten() -> None:
    admission = Admission(new_per_source_per_s=10.0, new_per_source_burst=4.0)
    for index in range(1000):
        source = f"10.0.{index // 256}.{index % 256}"
        assert admission.admit(source, 1.0) is None
        admission.release(source)
    assert admission.tracked_sources() == 1000
    # long after: every bucket is full again, so none needs to be held
    admission.admit(NAT, 1.0 + RATE_FORGET_EVERY_S + 1.0)
    assert admission.tracked_sources() == 1  # the one just admitted


def test_refusals_by_rate_are_summarised_not_logged_one_by_one() -> None:
    admission = Admission(new_per_source_per_s=1.0, new_per_source_burst=1.0, summary_interval_s=5)
    admission.admit(NAT, 0.0)
    for _ in range(300):
        admission.admit(NAT, 0.0)
    summary = admission.summary(0.0)
    assert summary is not None
    assert "300 over the rate of new connections per source address" in summary
    assert admission.summary(1.0) is None  # nothing new, and too soon anyway
