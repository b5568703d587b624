"""``-no-offload`` on both programs turns the data plane's offloads off (FLUXIFY_NO_OFFLOAD)."""

import pytest

from fluxify.cli import parse_client_args, parse_server_args
from fluxify.linux import udp_offload


@pytest.mark.parametrize("parse", [parse_server_args, parse_client_args])
def test_no_offload_flag_sets_the_switch_the_data_plane_reads(
    parse: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(udp_offload.NO_OFFLOAD_ENV, "0")  # restored afterwards
    assert not udp_offload.offloads_disabled()
    parse(["-no-offload"])  # type: ignore[operator]
    assert udp_offload.offloads_disabled()
