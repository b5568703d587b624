"""The nftables ruleset Fluxify owns: rendered as text (pure), applied atomically with ``nft -f -``.

Fluxify only ever creates, replaces and deletes its own table (``inet fluxify`` by default).
Note: an accept in our forward chain does not override a DROP policy or drop rule in another
table (every base chain on the hook must accept); such hosts need their firewall opened too.
"""

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from fluxify.errors import HostError

TABLE = "fluxify"
TUNNEL_V4 = "10.8.0.0/24"
TUNNEL_V6 = "fd00:8::/64"
NFT_TIMEOUT_S = 10.0


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


def server_ruleset(tun: str, table: str = TABLE) -> Ruleset:
    """SPEC §1 server: NAT the tunnel networks out of non-TUN interfaces, forward, clamp MSS."""
    return Ruleset(
        table=table,
        masquerade_sources=(TUNNEL_V4, TUNNEL_V6),
        masquerade_except=tun,
        forward_ifnames=(tun,),
        clamp_mss=True,
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
    lines.append("}")
    return "\n".join(lines) + "\n"


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
