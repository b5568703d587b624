"""Inner addresses, including the original's decimal-read-as-hex IPv6 quirk (reference §2.5)."""

from ipaddress import IPv4Address, IPv6Address

import pytest

from fluxify.protocol.addresses import client_v4, client_v6


@pytest.mark.parametrize(
    ("n", "v4", "v6"),
    [
        (2, "10.8.0.2", "fd00:8::2"),
        (10, "10.8.0.10", "fd00:8::10"),
        (250, "10.8.0.250", "fd00:8::250"),
    ],
)
def test_addresses_match_the_go_server(n: int, v4: str, v6: str) -> None:
    assert client_v4(n) == IPv4Address(v4)
    assert client_v6(n) == IPv6Address(v6)
    assert int(client_v6(10)) & 0xFFFF == 0x10  # "10" is read as hex, as Go does


@pytest.mark.parametrize("n", [0, 1, 251, 255])
def test_numbers_outside_the_pool_are_refused(n: int) -> None:
    with pytest.raises(ValueError, match=r"2\.\.250"):
        client_v4(n)
