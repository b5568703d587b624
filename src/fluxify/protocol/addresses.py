"""Inner (tunnel) addressing of SPEC §1 and the original's IPv6 quirk (reference §2.5)."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

TUNNEL_NETWORK_V4 = IPv4Network("10.8.0.0/24")
TUNNEL_NETWORK_V6 = IPv6Network("fd00:8::/64")
SERVER_TUN_V4 = IPv4Address("10.8.0.1")
SERVER_TUN_V6 = IPv6Address("fd00:8::1")
TUN_PREFIX_V4 = 24
TUN_PREFIX_V6 = 64
TUN_MTU = 1400

FIRST_CLIENT_HOST = 2
LAST_CLIENT_HOST = 250


def client_v4(host_number: int) -> IPv4Address:
    """``10.8.0.N`` for a client host number N in 2..250."""
    _check_host_number(host_number)
    return TUNNEL_NETWORK_V4.network_address + host_number


def client_v6(host_number: int) -> IPv6Address:
    """The original's v6 address for host number N: ``"fd00:8:0::" + str(N)``.

    The decimal digits are read as hex (N=10 gives ``fd00:8::10`` = 0x10), exactly as Go Fluxify
    does, so mixed Python/Go deployments agree on addresses.
    """
    _check_host_number(host_number)
    return IPv6Address("fd00:8:0::" + str(host_number))


def _check_host_number(host_number: int) -> None:
    if not FIRST_CLIENT_HOST <= host_number <= LAST_CLIENT_HOST:
        raise ValueError(
            f"client host number {host_number} is outside {FIRST_CLIENT_HOST}..{LAST_CLIENT_HOST}"
        )
