import pytest

from fluxify.errors import HostError
from fluxify.linux import nftables
from fluxify.linux.nftables import Ruleset, loss_ruleset, render, server_ruleset, uplink_ruleset
from tests.linux.conftest import requires_root

SERVER_SCRIPT = """\
table inet fluxify {}
delete table inet fluxify
table inet fluxify {
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\ttcp flags syn tcp option maxseg size set rt mtu
\t\tiifname "tun0" accept
\t\toifname "tun0" accept
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 10.8.0.0/24 oifname != "tun0" masquerade
\t\tip6 saddr fd00:8::/64 oifname != "tun0" masquerade
\t}
}
"""


def test_server_ruleset_renders_nat_forward_and_mss_clamp() -> None:
    assert render(server_ruleset("tun0")) == SERVER_SCRIPT


def test_uplink_ruleset_masquerades_out_of_each_uplink() -> None:
    script = render(uplink_ruleset(["wan1", "wan2"]))
    assert '\t\toifname { "wan1", "wan2" } masquerade\n' in script
    assert "chain forward" not in script
    assert render(uplink_ruleset(["wan1"])).count('oifname "wan1" masquerade') == 1


def test_loss_ruleset_drops_at_random_on_given_interfaces() -> None:
    script = render(loss_ruleset(["lan"], 7, table="fluxify_lab"))
    assert script.startswith("table inet fluxify_lab {}\n")
    assert '\t\toifname "lan" numgen random mod 100 < 7 drop\n' in script
    assert '\t\toifname "lan" drop\n' in render(loss_ruleset(["lan"], 100))


def test_render_depends_on_its_input_alone() -> None:
    """Equal rulesets render equally, a different TUN changes exactly its name, and rendering
    one ruleset leaves nothing behind that changes the next (no shared or cached state)."""
    nine = render(server_ruleset("tun9"))
    assert nine == SERVER_SCRIPT.replace('"tun0"', '"tun9"')
    assert nine != SERVER_SCRIPT
    assert render(server_ruleset("tun0")) == SERVER_SCRIPT  # after tun9: nothing carried over
    assert render(server_ruleset("tun9")) == nine  # a second, equal object
    ruleset = uplink_ruleset(["wan1", "wan2"])
    before = repr(ruleset)
    render(ruleset)
    assert repr(ruleset) == before  # rendering does not change what it renders


@pytest.mark.parametrize(
    "ruleset",
    [
        uplink_ruleset(['wan"; flush ruleset']),
        Ruleset(table="bad name"),
        loss_ruleset(["lan"], 101),
        Ruleset(drop_percent=5),
    ],
)
def test_render_refuses_unsafe_or_impossible_rulesets(ruleset: Ruleset) -> None:
    with pytest.raises(HostError):
        render(ruleset)


@pytest.mark.root
@requires_root
@pytest.mark.parametrize(
    "ruleset",
    [
        server_ruleset("tun0"),
        uplink_ruleset(["wan1", "wan2"]),
        loss_ruleset(["lan", "wan"], 3),
        loss_ruleset(["lan"], 100),
    ],
)
def test_nft_check_mode_accepts_every_rendered_ruleset(netns: str, ruleset: Ruleset) -> None:
    nftables.check(render(ruleset), netns)


@pytest.mark.root
@requires_root
def test_apply_twice_replaces_and_delete_removes_only_our_table(netns: str) -> None:
    nftables.run_nft(["add", "table", "inet", "someone_else"], netns=netns)
    nftables.apply(render(uplink_ruleset(["wan1"])), netns)
    nftables.apply(render(server_ruleset("tun0")), netns)
    dump = nftables.dump_table(netns=netns)
    assert dump is not None
    assert "maxseg" in dump and '"wan1"' not in dump
    nftables.delete_table(netns=netns)
    nftables.delete_table(netns=netns)  # already gone is fine
    assert nftables.dump_table(netns=netns) is None
    assert nftables.table_exists("someone_else", netns)


@pytest.mark.root
@requires_root
def test_nft_errors_become_host_errors(netns: str) -> None:
    with pytest.raises(HostError, match="nft"):
        nftables.apply("table inet fluxify { chain c { nonsense; } }\n", netns)
