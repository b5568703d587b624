"""One-way delay with jitter for an ISP router of the test bed (netem is not in this kernel).

Per direction, a ``lab.delay_process`` owns a TUN device in the ISP namespace (``dlyup``,
``dlydn``). An nftables chain at raw prerouting marks what enters from the LAN side (up) or the
WAN side (down); a policy rule sends marked packets into that direction's TUN, the process holds
them and writes them back into the same TUN, and from there the main table routes them on::

    lan ─(mark 0x101, notrack)─> dlyup ─ hold ─> dlyup ─(main table, NAT)─> wan
    wan ─(de-NAT, mark 0x102)──> dlydn ─ hold ─> dlydn ─(notrack, main table)─> lan

Only the pass on the ISP's *outside* is tracked by conntrack, so the ISP's masquerade sees each
packet once, on its way out of or into ``wan``. Switching a direction on or off is one atomic
nft transaction (mark and notrack change together). Costs: forwarded packets pass the router
twice (TTL/hop limit drops by 2); traffic to the router itself is not delayed. If the process
dies its TUN and route vanish, and traffic flows on undelayed.
"""

import json
import select
import subprocess
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from fluxify.errors import HostError
from fluxify.linux import nftables, sysctl

STEER_TABLE = "lab_delay"
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 30.0
# Room for bursts while the process is busy releasing (the TUN default is 500).
TUN_TXQUEUELEN = 5000
# Real-time scheduling keeps releases on time while iperf3 and friends load both cores
# (see delay_bench for the measured difference); low, so it never outranks kernel threads.
RT_PRIORITY = 10

Spawn = Callable[..., "subprocess.Popen[Any]"]


@dataclass(frozen=True)
class Direction:
    """The names one direction uses inside the ISP namespace."""

    name: str
    tun: str
    mark: int  # also the routing table number
    rule_priority: int


UP = Direction("up", tun="dlyup", mark=0x101, rule_priority=1001)
DOWN = Direction("down", tun="dlydn", mark=0x102, rule_priority=1002)
DIRECTIONS = {UP.name: UP, DOWN.name: DOWN}


@dataclass
class DelayProcess:
    """One running direction: its settings and the process holding its packets."""

    netns: str
    direction: Direction
    delay_ms: float
    jitter_ms: float
    process: "subprocess.Popen[str]"


def directions(which: str) -> tuple[Direction, ...]:
    """``"up"``, ``"down"`` or ``"both"`` as Direction objects."""
    if which == "both":
        return (UP, DOWN)
    if which not in DIRECTIONS:
        raise HostError(f"Delay direction {which!r} is not one of up, down, both.")
    return (DIRECTIONS[which],)


def start(
    spawn: Spawn,
    netns: str,
    direction: Direction,
    delay_ms: float,
    jitter_ms: float = 0.0,
    *,
    realtime: bool = True,
) -> DelayProcess:
    """Start the process of ``direction`` in ``netns`` and route its table into its TUN.

    Nothing is steered into it yet: ``steer`` switches that on.
    """
    if delay_ms < 0 or jitter_ms < 0:
        raise HostError(f"Delay {delay_ms} ms and jitter {jitter_ms} ms must not be negative.")
    argv = [sys.executable, "-m", "fluxify.lab.delay_process", "--tun", direction.tun]
    argv += ["--delay-ms", f"{delay_ms:g}", "--jitter-ms", f"{jitter_ms:g}"]
    argv += ["--rt-priority", str(RT_PRIORITY if realtime else 0)]
    process = spawn(netns, argv, stdout=subprocess.PIPE, text=True)
    running = DelayProcess(netns, direction, delay_ms, jitter_ms, process)
    try:
        _wait_ready(running)
        _ip(netns, f"link set {direction.tun} up txqueuelen {TUN_TXQUEUELEN}")
        _allow_return_path(netns, direction.tun)
        table = direction.mark
        for family in ("-4", "-6"):
            _ip(netns, f"{family} route replace default dev {direction.tun} table {table}")
            _ip(netns, f"{family} rule del priority {direction.rule_priority}", check=False)
            rule = f"fwmark {direction.mark:#x} lookup {table} priority {direction.rule_priority}"
            _ip(netns, f"{family} rule add {rule}")
    except BaseException:
        stop(running)
        raise
    return running


def stop(running: DelayProcess) -> dict[str, float]:
    """Stop the process (its TUN and routes go with it), drop its rules; its counters."""
    netns, direction = running.netns, running.direction
    for family in ("-4", "-6"):
        _ip(netns, f"{family} rule del priority {direction.rule_priority}", check=False)
    process = running.process
    if process.poll() is None:
        process.terminate()
    try:
        out, _ = process.communicate(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate(timeout=STOP_TIMEOUT_S)
    return _last_json(out or "")


def steer(netns: str, active: Collection[Direction], lan_ifnames: Sequence[str], wan: str) -> None:
    """Steer the ``active`` directions into their TUNs in one transaction (none: undo it all)."""
    if not active:
        nftables.delete_table(STEER_TABLE, netns)
        return
    nftables.apply(render_steering(active, lan_ifnames, wan), netns)


def render_steering(active: Collection[Direction], lan_ifnames: Sequence[str], wan: str) -> str:
    """The nft script marking what enters by the LAN (up) or WAN (down) side (pure)."""
    for name in (*lan_ifnames, wan):
        if not name or any(ch in name for ch in "\"'{};\n\\ "):
            raise HostError(f"{name!r} is not a valid interface name for nftables.")
    lans = ", ".join(f'"{name}"' for name in lan_ifnames)
    rules = []
    if UP in active:
        # Untracked on the way in, so conntrack and NAT see the packet once: out of dlyup.
        rules.append(f"iifname {{ {lans} }} meta mark set {UP.mark:#x} notrack")
    if DOWN in active:
        rules.append(f'iifname "{wan}" meta mark set {DOWN.mark:#x}')
        # Already de-NATed on the way in from wan: the second pass must not be tracked.
        rules.append(f'iifname "{DOWN.tun}" notrack')
    name = STEER_TABLE
    lines = [f"table inet {name} {{}}", f"delete table inet {name}", f"table inet {name} {{"]
    lines += ["\tchain steer {", "\t\ttype filter hook prerouting priority raw; policy accept;"]
    lines += [f"\t\t{rule}" for rule in rules]
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def _allow_return_path(netns: str, tun: str) -> None:
    """Packets come back in through the TUN from addresses routed elsewhere: no strict rp_filter.

    The kernel uses the larger of ``all`` and the device's value, so a strict (1) ``all``
    inherited from the host becomes loose (2), which the TUN's packets pass.
    """
    sysctl.write_sysctl(f"net.ipv4.conf.{tun}.rp_filter", "0", netns)
    if sysctl.read_sysctl("net.ipv4.conf.all.rp_filter", netns) == "1":
        sysctl.write_sysctl("net.ipv4.conf.all.rp_filter", "2", netns)


def _wait_ready(running: DelayProcess) -> None:
    stdout = running.process.stdout
    assert stdout is not None  # spawned with stdout=PIPE
    ready, _, _ = select.select([stdout], [], [], READY_TIMEOUT_S)
    line = stdout.readline() if ready else ""
    if not line.startswith("ready "):
        raise HostError(
            f"The delay emulator for {running.direction.name} in {running.netns} did not start "
            f"(said {line.strip()!r}); see its stderr."
        )


def _last_json(output: str) -> dict[str, float]:
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            counters: dict[str, float] = json.loads(line)
            return counters
    return {}


def _ip(netns: str, command: str, *, check: bool = True) -> None:
    argv = ["ip", "-n", netns, *command.split()]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostError(f"Delay emulator command {' '.join(argv)} failed: {exc}") from exc
    if check and done.returncode != 0:
        raise HostError(f"Delay emulator command {' '.join(argv)} failed: {done.stderr.strip()}")
