from ipaddress import IPv4Address

import pytest

from fluxify.lab.topology import plan


def test_plan_names_every_namespace_uniquely() -> None:
    first, second = plan(3), plan(3)
    assert first.name != second.name
    assert len(set(first.namespaces)) == 3 + 3
    assert not set(first.namespaces) & set(second.namespaces)
    assert plan(1, prefix="lab", suffix="x1").namespaces == (
        "labx1-cli",
        "labx1-isp1",
        "labx1-srv",
        "labx1-net",
    )


def test_each_uplink_has_its_own_home_network_and_public_address() -> None:
    topology = plan(2)
    one, two = topology.uplinks
    assert (one.ifname, two.ifname) == ("wan1", "wan2")
    assert one.address_v4.network != two.address_v4.network
    assert one.address_v6.network != two.address_v6.network
    assert one.gateway_v4 in one.address_v4.network and one.gateway_v6 in one.address_v6.network
    assert one.metric < two.metric
    assert one.isp_public_v4.network == topology.server_v4.network
    assert one.isp_public_v4 != two.isp_public_v4 != topology.server_v4
    assert topology.server_v4.ip == IPv4Address("198.18.0.1")
    assert topology.uplink(2) is two


@pytest.mark.parametrize(("uplinks", "prefix"), [(0, "fx"), (9, "fx"), (2, "f-x")])
def test_plan_refuses_bad_shapes(uplinks: int, prefix: str) -> None:
    with pytest.raises(ValueError):
        plan(uplinks, prefix)
