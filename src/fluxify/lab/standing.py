"""``fluxify-lab up`` / ``down``: a lab that stays up for you to experiment in, and its cleanup.

``up`` builds the namespace test bed with N uplinks, applies per-uplink rate (tbf), one-way
delay (the delay emulator) and loss (nftables random drop), prints how to get inside, and holds
it until Ctrl-C or SIGTERM, then tears everything down. ``down`` removes what a killed ``up``
left behind (namespaces named ``fxlab…``, and the processes in them).
"""

import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from fluxify.lab.testbed import Testbed, build_testbed, list_namespaces

LAB_PREFIX = "fxlab"


@dataclass(frozen=True)
class UplinkShape:
    """What one uplink emulates; 0 means "not limited" for each field."""

    rate_mbit: float = 0.0
    delay_ms: float = 0.0
    loss_percent: int = 0


STOP_POLL_S = 0.2  # how often the held lab looks whether a stop signal came


def hold_lab(shapes: Sequence[UplinkShape]) -> int:
    """Build the lab, hold it until SIGINT or SIGTERM, then tear it down.

    The handler only records the signal: it takes no lock. (It set a ``threading.Event`` once,
    and a signal that came while ``Event.wait`` held the event's own lock deadlocked the lab
    for good, deaf to every later signal.)"""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with build_testbed(len(shapes), prefix=LAB_PREFIX) as bed:
            _apply(bed, shapes)
            _describe(bed, shapes)
            while not received:
                time.sleep(STOP_POLL_S)
            print("tearing the lab down ...", flush=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("lab removed", flush=True)
    return 0


def _apply(bed: Testbed, shapes: Sequence[UplinkShape]) -> None:
    for number, shape in enumerate(shapes, start=1):
        uplink = bed.topology.uplink(number)
        if shape.rate_mbit:
            bed.shape_uplink(number, shape.rate_mbit)
        if shape.delay_ms:
            bed.set_delay(number, shape.delay_ms)
        if shape.loss_percent:
            bed.set_loss(
                uplink.isp_ns, [uplink.isp_lan_ifname, uplink.isp_wan_ifname], shape.loss_percent
            )


def _describe(bed: Testbed, shapes: Sequence[UplinkShape]) -> None:
    t = bed.topology
    print(f"lab {t.name} is up; Ctrl-C tears it down.")
    print(f"  client:   ip netns exec {t.client_ns} bash")
    for number, shape in enumerate(shapes, start=1):
        u = t.uplink(number)
        limits = ", ".join(
            text
            for text in (
                f"{shape.rate_mbit:g} Mbit/s" if shape.rate_mbit else "",
                f"{shape.delay_ms:g} ms each way" if shape.delay_ms else "",
                f"{shape.loss_percent} % loss" if shape.loss_percent else "",
            )
            if text
        )
        where = f"{u.ifname} {u.address_v4} via {u.gateway_v4}"
        print(f"  uplink {number}: {where} ({limits or 'unshaped'})")
    print(f"  server:   ip netns exec {t.server_ns} bash   ({t.server_v4.ip}, {t.server_v6.ip})")
    print(f"  internet: ip netns exec {t.internet_ns} bash   ({t.internet_host_v4.ip})")
    print(flush=True)


def remove_leftovers() -> int:
    """Delete every ``fxlab…`` namespace and the processes in it; print what was removed."""
    leftovers = [name for name in list_namespaces() if name.startswith(LAB_PREFIX)]
    for netns in leftovers:
        pids = subprocess.run(
            ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        print(f"removed {netns}")
    if not leftovers:
        print("nothing to remove")
    return 0
