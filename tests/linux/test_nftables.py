import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fluxify.errors import HostError
from fluxify.linux import nftables
from fluxify.linux.journal import Journal
from fluxify.linux.netns import NetnsThread
from fluxify.linux.nftables import (
    FloodFilter,
    Ruleset,
    loss_ruleset,
    render,
    render_paths,
    server_ruleset,
    uplink_ruleset,
)
from tests.linux.conftest import ip, requires_root

FLOOD = FloodFilter(udp_port=8000, control_port=8443, except_ifname="tun0")

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


def test_the_flood_filter_lets_confirmed_paths_pass_and_limits_every_other_source() -> None:
    script = render(server_ruleset("tun0", flood_filter=FLOOD))
    assert script.startswith(SERVER_SCRIPT.removesuffix("}\n"))  # NAT, forward and clamp stay
    for line in [
        '\t\tudp dport 8000 iifname != "tun0" fib daddr type local jump data_filter\n',
        "\t\tip saddr . udp sport @data_paths4 accept\n",
        "\t\tip6 saddr . udp sport @data_paths6 accept\n",
        "\t\tupdate @data_sources4 { ip saddr limit rate over 50/second burst 100 packets }",
        "{ ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over 50/second burst 100 packets }",
        "\t\tlimit rate over 2000/second burst 4000 packets counter name",
        "\t\ttcp dport 8443 ct state new jump control_filter\n",
        "\t\tupdate @control_sources4 { ip saddr limit rate over 20/second burst 80 packets }",
    ]:
        assert line in script
    # the confirmed paths are accepted before any limit is looked at
    assert script.index("@data_paths6 accept") < script.index("update @data_sources4")
    assert "flood" not in render(server_ruleset("tun0"))


def test_render_paths_replaces_both_sets_in_one_script() -> None:
    script = render_paths([("192.0.2.7", 4000), ("2001:db8::1", 5000), ("192.0.2.1", 9)])
    assert script == (
        "flush set inet fluxify data_paths4\n"
        "add element inet fluxify data_paths4 { 192.0.2.1 . 9, 192.0.2.7 . 4000 }\n"
        "flush set inet fluxify data_paths6\n"
        "add element inet fluxify data_paths6 { 2001:db8::1 . 5000 }\n"
    )
    assert render_paths([]) == (
        "flush set inet fluxify data_paths4\nflush set inet fluxify data_paths6\n"
    )


@pytest.mark.parametrize(
    "paths", [[("1.2.3.4 } ; flush ruleset ; {", 1)], [("192.0.2.1", 0)], [("::1", 70000)]]
)
def test_render_paths_refuses_what_is_no_address_and_port(paths: list[tuple[str, int]]) -> None:
    with pytest.raises(HostError):
        render_paths(paths)


@pytest.mark.parametrize(
    "ruleset",
    [
        server_ruleset("tun0", flood_filter=FloodFilter(0, 8443, "tun0")),
        server_ruleset("tun0", flood_filter=FloodFilter(8000, 8443, "tun0", datagrams_per_s=0)),
        server_ruleset("tun0", flood_filter=FloodFilter(8000, 8443, "tun 0")),
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
        server_ruleset("tun0", flood_filter=FLOOD),
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


SENT_PER_SOURCE = 1000
RECEIVE_BUFFER = 8 * 1024 * 1024
WAIT_S = 10.0


def _udp(family: socket.AddressFamily, bind: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER)  # SO_RCVBUFFORCE: we are root
    sock.bind((bind, 0))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket, counts: dict[int, int]) -> None:
    """Count what ``sock`` holds, by the sender's port."""
    while True:
        try:
            _data, address = sock.recvfrom(2048)
        except BlockingIOError:
            return
        counts[address[1]] = counts.get(address[1], 0) + 1


@pytest.mark.root
@requires_root
@pytest.mark.parametrize(
    ("family", "server", "path_source", "flood_source"),
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.2", "127.0.0.3"),
        (socket.AF_INET6, "::1", "fd00:99::1", "fd00:98::1"),
    ],
)
def test_the_kernel_drops_a_flooding_source_beyond_its_rate_and_passes_a_confirmed_path(
    netns: str,
    family: socket.AddressFamily,
    server: str,
    path_source: str,
    flood_source: str,
) -> None:
    """Two sources send as fast as they can, far above 50/s: every datagram of the confirmed
    path reaches the socket; of the other source's, its burst and rate do, the rest the kernel
    drops and counts."""
    if family is socket.AF_INET6:
        for address in (path_source, flood_source):
            ip("-n", netns, "addr", "add", f"{address}/64", "dev", "lo", "nodad")
    with NetnsThread(netns) as inside:
        receiver = inside.call(_udp, family, server)
        confirmed = inside.call(_udp, family, path_source)
        flooder = inside.call(_udp, family, flood_source)
    port, path_port, flood_port = (s.getsockname()[1] for s in (receiver, confirmed, flooder))
    flood = FloodFilter(udp_port=port, control_port=8443, except_ifname="fxtun0")
    nftables.apply(render(server_ruleset("fxtun0", flood_filter=flood)), netns)
    nftables.apply(render_paths([(path_source, path_port)]), netns)
    counts: dict[int, int] = {}
    dropped = 0
    try:
        for index in range(SENT_PER_SOURCE):
            confirmed.sendto(b"path %d" % index, (server, port))
            flooder.sendto(b"flood %d" % index, (server, port))

        def all_accounted() -> bool:
            nonlocal dropped
            _drain(receiver, counts)
            dropped = nftables.read_counters(netns=netns)[nftables.DATA_OVER_SOURCE]
            done = counts.get(path_port, 0) == SENT_PER_SOURCE
            return done and counts.get(flood_port, 0) + dropped == SENT_PER_SOURCE

        _wait("every datagram received or counted", all_accounted)
    finally:
        for sock in (receiver, confirmed, flooder):
            sock.close()
    print(f"received by sender port {counts}; the kernel dropped {dropped}")
    assert counts[path_port] == SENT_PER_SOURCE
    assert flood.datagram_burst <= counts[flood_port] < SENT_PER_SOURCE
    assert dropped == SENT_PER_SOURCE - counts[flood_port]


def _wait(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT_S} s for {what}")
        time.sleep(0.01)


@pytest.mark.root
@requires_root
def test_the_filter_its_sets_and_counters_go_with_the_table(netns: str, tmp_path: Path) -> None:
    """Stop (the journal's undo) leaves no set, meter or counter of ours behind."""
    with Journal("server", netns=netns, state_dir=tmp_path) as journal:
        journal.apply_nftables(server_ruleset("fxtun0", flood_filter=FLOOD))
        nftables.apply(render_paths([("192.0.2.7", 4000)]), netns)
        listing = nftables.run_nft(["list", "ruleset"], netns=netns)
        assert "192.0.2.7 . 4000" in listing
        assert nftables.DATA_OVER_SOURCE in listing
    assert nftables.run_nft(["list", "ruleset"], netns=netns).strip() == ""
