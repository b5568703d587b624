"""A short run of the datagram fuzzer (the full one: ``bash scripts/fuzz-datagrams``)."""

from fluxify.protocol.drops import DropReason
from tests.protocol.datagram_fuzz import fuzz_client, fuzz_server

# Reasons the generator must reach on each side: it gets past every check to the deeper ones.
SERVER_REASONS = {
    DropReason.TOO_SHORT,
    DropReason.LENGTH_MISMATCH,
    DropReason.UNKNOWN_SESSION,
    DropReason.BAD_TAG,
    DropReason.REPLAY,
    DropReason.CONTROL_REPLAY,
    DropReason.UNKNOWN_TYPE,
    DropReason.UNKNOWN_SOURCE_BUDGET,
    DropReason.PATH_LIMIT,
    DropReason.STALE_HEARTBEAT,
    DropReason.SPOOFED_SOURCE,
}
CLIENT_REASONS = {
    DropReason.FOREIGN_SOURCE,
    DropReason.BAD_TAG,
    DropReason.REPLAY,
    DropReason.CONTROL_REPLAY,
    DropReason.LENGTH_MISMATCH,
}


def test_generated_datagrams_into_the_server_are_accepted_or_counted_never_a_crash() -> None:
    report = fuzz_server(40_000, seed=13)
    assert report.crash_count == 0, report.crashes[0]
    assert report.read == report.sent  # every datagram sent was read (GRO pieces one by one)
    assert report.unaccounted == 0, "\n".join(report.lines())
    assert report.accepted > 1000
    missing = {r.name.lower() for r in SERVER_REASONS} - set(report.drops)
    assert not missing, missing


def test_generated_datagrams_into_the_client_are_accepted_or_counted_never_a_crash() -> None:
    report = fuzz_client(30_000, seed=13)
    assert report.crash_count == 0, report.crashes[0]
    assert report.read == report.sent
    assert report.unaccounted == 0, "\n".join(report.lines())
    assert report.accepted > 1000
    missing = {r.name.lower() for r in CLIENT_REASONS} - set(report.drops)
    assert not missing, missing
