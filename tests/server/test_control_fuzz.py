"""A short run of the control-plane fuzzer (the full one: ``bash scripts/fuzz-control``)."""

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.server.control_fuzz import FuzzReport, check_one, fuzz, fuzz_over_tls, new_handler


def test_generated_inputs_are_decoded_or_refused_never_a_crash() -> None:
    report = fuzz(3000, seed=13)
    assert report.crash_count == 0, report.crashes[0][1]
    # every stage saw both outcomes: the generator reaches past the JSON parser
    for stage in ("request: decoded", "handler: session granted", "response: decoded"):
        assert report.counts[stage] > 0, stage
    assert report.counts["handler: refused (SessionRefusedError)"] > 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=200).map(lambda t: t.encode()))
def test_arbitrary_bytes_never_crash_the_decoders_or_the_handler(data: bytes) -> None:
    report = FuzzReport()
    check_one(data, new_handler(), report)
    assert report.crash_count == 0, report.crashes[0][1]


async def test_generated_requests_over_tls_leave_the_server_serving(tmp_path: Path) -> None:
    report = await fuzz_over_tls(25, seed=13, root=tmp_path)
    assert report.crash_count == 0, report.crashes[0][1]
    assert report.counts["tls: served afterwards"] == 1
