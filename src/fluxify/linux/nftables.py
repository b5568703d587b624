"""The nftables ruleset Fluxify owns: rendered as text (pure), applied atomically with ``nft -f -``.

Fluxify only ever creates, replaces and deletes its own table (``inet fluxify`` by default).
Note: an accept in our forward chain does not override a DROP policy or drop rule in another
table (every base chain on the hook must accept); such hosts need their firewall opened too.
"""

import ipaddress
import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fluxify.errors import HostError

TABLE = "fluxify"
TUNNEL_V4 = "10.8.0.0/24"
TUNNEL_V6 = "fd00:8::/64"
NFT_TIMEOUT_S = 10.0

# The flood filter's objects in our table (issue 13), named here for the server's sync and tests.
DATA_PATHS_V4 = "data_paths4"  # confirmed paths of live sessions: address . port
DATA_PATHS_V6 = "data_paths6"
DATA_OVER_SOURCE = "datagrams_over_source_rate"  # counters of what the kernel dropped
DATA_OVER_TOTAL = "datagrams_over_total_rate"
CONTROL_OVER_SOURCE = "connections_over_source_rate"
FLOOD_COUNTERS = (DATA_OVER_SOURCE, DATA_OVER_TOTAL, CONTROL_OVER_SOURCE)
DATA_CHAIN = "data_filter"
CONTROL_CHAIN = "control_filter"
V6_SOURCE_MASK = "ffff:ffff:ffff:ffff::"  # a v6 source is its /64, as in server/admission.py
SOURCE_SET_SIZE = 65536  # sources tracked at once; a full set lets the total limit decide
SOURCE_SET_TIMEOUT = "60s"  # a quiet source's bucket is forgotten after this


@dataclass(frozen=True)
class FloodFilter:
    """Kernel-side limits at the server's ports; datagrams from confirmed paths pass unlimited.

    Datagrams to ``udp_port`` from a source address (a v4 address, a v6 /64) that is no
    confirmed path get ``datagrams_per_s`` (burst ``datagram_burst``) per source and
    ``unconfirmed_per_s`` (burst twice that) all sources together; new TCP connections to
    ``control_port`` get ``connections_per_s`` (burst ``connection_burst``) per source. Beyond
    that the kernel drops them, counted. Nothing arriving by ``except_ifname`` (the TUN:
    tunnelled traffic) and nothing being forwarded is looked at.

    Why these numbers: a new client's path needs a handful of datagrams before the server
    confirms it (a handshake per path, its retries, heartbeats every second), a moved path
    (a NAT rebinding) the same, and the path is in the set a few ms after the first
    authenticated one: 50/s with a burst of 100 carries that for several clients behind one
    NAT, and is above the engine's own budget of 20 decryptions/s (burst 40) per session for
    unknown sources, so that finer check still decides below it. What a single flooding source
    costs the server is then 50 x ~5 µs = 0.25 ms per second. 2000/s in total bounds what many
    sources (or a full source set) cost to ~1 % of a core and is far above what legitimate new
    paths need. Connections: twice server/admission.py's bucket (10/s, burst 40), so the
    server's counted refusals still shape ordinary excess and the kernel only cuts floods.
    """

    udp_port: int
    control_port: int
    except_ifname: str
    datagrams_per_s: int = 50
    datagram_burst: int = 100
    unconfirmed_per_s: int = 2000
    connections_per_s: int = 20
    connection_burst: int = 80


@dataclass(frozen=True)
class Ruleset:
    """What goes into the table; empty fields render no rule.

    - ``masquerade_out``: masquerade everything leaving by these interfaces.
    - ``masquerade_sources`` + ``masquerade_except``: masquerade these source prefixes leaving
      by any interface except ``masquerade_except`` (the server's TUN).
    - ``forward_ifnames``: accept forwarding to and from these interfaces.
    - ``clamp_mss``: clamp the MSS of forwarded TCP SYNs to the route MTU.
    - ``drop_percent`` / ``drop_ifnames``: drop that share of packets leaving those interfaces
      at random (loss emulation in the lab).
    """

    table: str = TABLE
    masquerade_out: tuple[str, ...] = ()
    masquerade_sources: tuple[str, ...] = ()
    masquerade_except: str | None = None
    forward_ifnames: tuple[str, ...] = ()
    clamp_mss: bool = False
    drop_percent: int = 0
    drop_ifnames: tuple[str, ...] = ()
    flood_filter: FloodFilter | None = None


def server_ruleset(
    tun: str, table: str = TABLE, flood_filter: FloodFilter | None = None
) -> Ruleset:
    """SPEC §1 server: NAT the tunnel networks out of non-TUN interfaces, forward, clamp MSS;
    with ``flood_filter``, the kernel's limits at the server's ports too."""
    return Ruleset(
        table=table,
        masquerade_sources=(TUNNEL_V4, TUNNEL_V6),
        masquerade_except=tun,
        forward_ifnames=(tun,),
        clamp_mss=True,
        flood_filter=flood_filter,
    )


def uplink_ruleset(uplinks: Sequence[str], table: str = TABLE) -> Ruleset:
    """Client and load-balance modes: masquerade whatever leaves by one of the uplinks."""
    return Ruleset(table=table, masquerade_out=tuple(uplinks))


def loss_ruleset(ifnames: Sequence[str], percent: int, table: str = TABLE) -> Ruleset:
    """Lab: drop ``percent`` % of the packets leaving by ``ifnames``, at random."""
    return Ruleset(table=table, drop_percent=percent, drop_ifnames=tuple(ifnames))


def render(ruleset: Ruleset) -> str:
    """The ``nft -f`` script that replaces the table atomically with ``ruleset``.

    Declaring then deleting the table first makes the script work whether or not the table
    exists, and the whole file is one transaction: the host never sees a half ruleset.
    """
    _check(ruleset)
    name = ruleset.table
    lines = [f"table inet {name} {{}}", f"delete table inet {name}", f"table inet {name} {{"]
    lines += _forward_chain(ruleset)
    lines += _postrouting_chain(ruleset)
    lines += _loss_chain(ruleset)
    lines += _flood_filter(ruleset.flood_filter)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _flood_filter(flood: FloodFilter | None) -> list[str]:
    if flood is None:
        return []
    sources = f"size {SOURCE_SET_SIZE}; flags dynamic,timeout; timeout {SOURCE_SET_TIMEOUT};"
    lines = [
        f"\tset {DATA_PATHS_V4} {{ type ipv4_addr . inet_service; }}",
        f"\tset {DATA_PATHS_V6} {{ type ipv6_addr . inet_service; }}",
    ]
    for name in ("data_sources4", "control_sources4"):
        lines.append(f"\tset {name} {{ type ipv4_addr; {sources} }}")
    for name in ("data_sources6", "control_sources6"):
        lines.append(f"\tset {name} {{ type ipv6_addr; {sources} }}")
    lines += [f"\tcounter {name} {{}}" for name in FLOOD_COUNTERS]
    per_source = f"limit rate over {flood.datagrams_per_s}/second burst {flood.datagram_burst}"
    total = f"{flood.unconfirmed_per_s}/second burst {2 * flood.unconfirmed_per_s}"
    per_connection = (
        f"limit rate over {flood.connections_per_s}/second burst {flood.connection_burst}"
    )
    v6_source = f"ip6 saddr & {V6_SOURCE_MASK}"
    tun = _quote(flood.except_ifname)
    lines += [
        # Before conntrack (priority raw): a dropped datagram costs no connection entry.
        "\tchain data_prerouting {",
        "\t\ttype filter hook prerouting priority raw; policy accept;",
        f"\t\tudp dport {flood.udp_port} iifname != {tun} fib daddr type local jump {DATA_CHAIN}",
        "\t}",
        f"\tchain {DATA_CHAIN} {{",
        f"\t\tip saddr . udp sport @{DATA_PATHS_V4} accept",
        f"\t\tip6 saddr . udp sport @{DATA_PATHS_V6} accept",
        f"\t\tupdate @data_sources4 {{ ip saddr {per_source} packets }}"
        f' counter name "{DATA_OVER_SOURCE}" drop',
        f"\t\tupdate @data_sources6 {{ {v6_source} {per_source} packets }}"
        f' counter name "{DATA_OVER_SOURCE}" drop',
        f'\t\tlimit rate over {total} packets counter name "{DATA_OVER_TOTAL}" drop',
        "\t}",
        "\tchain control_input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f"\t\ttcp dport {flood.control_port} ct state new jump {CONTROL_CHAIN}",
        "\t}",
        f"\tchain {CONTROL_CHAIN} {{",
        f"\t\tupdate @control_sources4 {{ ip saddr {per_connection} packets }}"
        f' counter name "{CONTROL_OVER_SOURCE}" drop',
        f"\t\tupdate @control_sources6 {{ {v6_source} {per_connection} packets }}"
        f' counter name "{CONTROL_OVER_SOURCE}" drop',
        "\t}",
    ]
    return lines


def render_paths(paths: Iterable[tuple[str, int]], table: str = TABLE) -> str:
    """The ``nft -f`` script that makes the confirmed-path sets hold exactly ``paths``
    (``(address, port)``, v4 or v6), in one transaction: no packet sees a half-filled set."""
    v4: list[str] = []
    v6: list[str] = []
    for host, port in sorted(paths):
        try:
            address = ipaddress.ip_address(host)  # also refuses anything that is no address
        except ValueError as exc:
            raise HostError(f"{host!r} is no IP address for an nftables set.") from exc
        if not 0 < port < 65536:
            raise HostError(f"{port} is no UDP port for an nftables set.")
        (v4 if address.version == 4 else v6).append(f"{address} . {port}")
    lines = []
    for name, elements in ((DATA_PATHS_V4, v4), (DATA_PATHS_V6, v6)):
        lines.append(f"flush set inet {table} {name}")
        if elements:
            lines.append(f"add element inet {table} {name} {{ {', '.join(elements)} }}")
    return "\n".join(lines) + "\n"


def render_filter_off(table: str = TABLE) -> str:
    """The script that empties the flood filter's chains: everything passes unlimited again."""
    return f"flush chain inet {table} {DATA_CHAIN}\nflush chain inet {table} {CONTROL_CHAIN}\n"


def read_counters(table: str = TABLE, netns: str | None = None) -> dict[str, int]:
    """Our table's named counters: packets each."""
    listing = run_nft(["-j", "list", "counters", "table", "inet", table], netns=netns)
    try:
        items = json.loads(listing)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise HostError(f"nft printed no counters we can read: {exc}") from exc
    counters: dict[str, int] = {}
    for item in items:
        counter = item.get("counter") if isinstance(item, dict) else None
        if isinstance(counter, dict) and counter.get("table") == table:
            counters[str(counter.get("name"))] = int(counter.get("packets", 0))
    return counters


def _forward_chain(ruleset: Ruleset) -> list[str]:
    if not (ruleset.forward_ifnames or ruleset.clamp_mss):
        return []
    lines = ["\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;"]
    if ruleset.clamp_mss:
        # The TUN's MTU (1400) is below the uplinks'; without clamping, SYN-ACKs from the
        # internet announce an MSS the tunnel cannot carry (SPEC §1).
        lines.append("\t\ttcp flags syn tcp option maxseg size set rt mtu")
    for ifname in ruleset.forward_ifnames:
        lines.append(f"\t\tiifname {_quote(ifname)} accept")
        lines.append(f"\t\toifname {_quote(ifname)} accept")
    lines.append("\t}")
    return lines


def _postrouting_chain(ruleset: Ruleset) -> list[str]:
    rules: list[str] = []
    if ruleset.masquerade_out:
        rules.append(f"oifname {_set(ruleset.masquerade_out)} masquerade")
    for prefix in ruleset.masquerade_sources:
        family = "ip6" if ":" in prefix else "ip"
        rule = f"{family} saddr {prefix}"
        if ruleset.masquerade_except is not None:
            rule += f" oifname != {_quote(ruleset.masquerade_except)}"
        rules.append(rule + " masquerade")
    if not rules:
        return []
    head = [
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    ]
    return head + [f"\t\t{rule}" for rule in rules] + ["\t}"]


def _loss_chain(ruleset: Ruleset) -> list[str]:
    if ruleset.drop_percent <= 0:
        return []
    # numgen's "< 100" is out of range for nft: a total loss is a plain drop.
    chance = (
        "" if ruleset.drop_percent == 100 else f"numgen random mod 100 < {ruleset.drop_percent} "
    )
    return [
        "\tchain loss {",
        "\t\ttype filter hook postrouting priority filter; policy accept;",
        f"\t\toifname {_set(ruleset.drop_ifnames)} {chance}drop",
        "\t}",
    ]


def _check(ruleset: Ruleset) -> None:
    names = [
        ruleset.table,
        *ruleset.masquerade_out,
        *ruleset.forward_ifnames,
        *ruleset.drop_ifnames,
        *([ruleset.masquerade_except] if ruleset.masquerade_except else []),
        *([ruleset.flood_filter.except_ifname] if ruleset.flood_filter else []),
    ]
    for name in names:
        # Interface and table names go into the script verbatim: refuse anything that could
        # end a string or a statement.
        if not name or any(ch in name for ch in "\"'{};\n\\ "):
            raise HostError(f"{name!r} is not a valid interface or table name for nftables.")
    if not 0 <= ruleset.drop_percent <= 100:
        raise HostError(f"Drop percentage {ruleset.drop_percent} is outside 0..100.")
    if ruleset.drop_percent and not ruleset.drop_ifnames:
        raise HostError("A random-drop rule needs at least one interface.")
    flood = ruleset.flood_filter
    if flood is not None:
        for port in (flood.udp_port, flood.control_port):
            if not 0 < port < 65536:
                raise HostError(f"Port {port} is outside 1..65535.")
        rates = (flood.datagrams_per_s, flood.datagram_burst, flood.unconfirmed_per_s)
        if min(*rates, flood.connections_per_s, flood.connection_burst) < 1:
            raise HostError("The flood filter's rates and bursts must be at least 1.")


def _quote(ifname: str) -> str:
    return f'"{ifname}"'


def _set(ifnames: Sequence[str]) -> str:
    if len(ifnames) == 1:
        return _quote(ifnames[0])
    return "{ " + ", ".join(_quote(name) for name in ifnames) + " }"


def run_nft(args: Sequence[str], script: str | None = None, netns: str | None = None) -> str:
    """Run ``nft ARGS`` (in ``netns`` via ``ip netns exec``), feeding ``script`` on stdin."""
    argv = ["nft", *args]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        done = subprocess.run(
            argv, input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostError(f"Cannot run nft: {exc}. Is the nftables package installed?") from exc
    if done.returncode != 0:
        raise HostError(f"nft {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def apply(script: str, netns: str | None = None) -> None:
    """Apply a rendered script in one transaction."""
    run_nft(["-f", "-"], script, netns)


def check(script: str, netns: str | None = None) -> None:
    """Ask nft whether ``script`` is valid without applying it (``nft -c``)."""
    run_nft(["-c", "-f", "-"], script, netns)


def table_exists(table: str = TABLE, netns: str | None = None) -> bool:
    listing = run_nft(["list", "tables", "inet"], netns=netns)
    return f"table inet {table}" in listing.splitlines()


def dump_table(table: str = TABLE, netns: str | None = None) -> str | None:
    """The table as an ``nft -f`` script, or None when it does not exist."""
    if not table_exists(table, netns):
        return None
    return run_nft(["list", "table", "inet", table], netns=netns)


def delete_table(table: str = TABLE, netns: str | None = None) -> None:
    """Delete our table; a missing table is fine (that is the wanted end state)."""
    if table_exists(table, netns):
        run_nft(["delete", "table", "inet", table], netns=netns)
