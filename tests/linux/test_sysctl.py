from pathlib import Path

import pytest

from fluxify.errors import HostError
from fluxify.linux import sysctl
from fluxify.linux.netlink import NotFoundError
from tests.linux.conftest import requires_root


def test_dotted_names_map_to_proc_sys_paths() -> None:
    assert sysctl.sysctl_path("net.ipv4.ip_forward") == Path("/proc/sys/net/ipv4/ip_forward")
    assert sysctl.sysctl_path("net/ipv4/conf/eth0.100/rp_filter") == Path(
        "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    )
    with pytest.raises(HostError):
        sysctl.sysctl_path("net/../../etc/passwd")


@pytest.mark.root
@requires_root
def test_write_in_a_namespace_leaves_the_host_alone(netns: str) -> None:
    host_value = sysctl.read_sysctl(sysctl.IPV4_FORWARD)
    wanted = "0" if sysctl.read_sysctl(sysctl.IPV4_FORWARD, netns) == "1" else "1"
    sysctl.write_sysctl(sysctl.IPV4_FORWARD, wanted, netns)
    assert sysctl.read_sysctl(sysctl.IPV4_FORWARD, netns) == wanted
    assert sysctl.read_sysctl(sysctl.IPV4_FORWARD) == host_value


@pytest.mark.root
@requires_root
def test_missing_parameter_is_not_found(netns: str) -> None:
    with pytest.raises(NotFoundError):
        sysctl.read_sysctl("net.ipv4.conf.nosuchif.rp_filter", netns)


def test_names_with_dots_in_an_interface_map_right_in_both_notations() -> None:
    vlan = Path("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
    assert sysctl.sysctl_path("net.ipv4.conf.eth0/100.rp_filter") == vlan  # sysctl(8) dotted
    assert sysctl.sysctl_path("net/ipv4/conf/eth0.100/rp_filter") == vlan
    assert sysctl.sysctl_path(sysctl.rp_filter_name("eth0.100")) == vlan
    for bad in ("net.ipv4..x", "net/ipv4//x", "net.ipv4.conf.../x", "/etc/passwd"):
        with pytest.raises(HostError):
            sysctl.sysctl_path(bad)
