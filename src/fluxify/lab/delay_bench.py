"""How well the delay emulator (``lab.delay``) holds its delay, and how much it can forward.

``python -m fluxify.lab.delay_bench [--out DIR] [--seconds S]`` builds a one-uplink test bed and
measures, through ISP 1 (client to server, the ``up`` direction unless said otherwise):

- the path's one-way delay with no emulator (the floor the errors are measured against);
- the one-way delay error (measured - configured) of a paced UDP stream at 100, 200 and
  400 Mbit/s (1500-byte packets), with loss and reordering;
- the emulator's capacity (iperf3, both directions delayed 5 ms): TCP up- and download, and
  UDP upload offered at 200/400/800 Mbit/s (1472-byte datagrams) with its loss;
- ping RTT with 10 ms each way (configured 20 ms).

It prints a table and writes ``delay-bench.json`` (and ``delay-bench.png`` with matplotlib).
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fluxify.errors import HostError
from fluxify.lab.iperf import iperf
from fluxify.lab.testbed import Testbed, build_testbed

PROBE_PORT = 5401
LISTEN_TIMEOUT_S = 10.0
ACCURACY_DELAY_MS = 20.0
CAPACITY_DELAY_MS = 5.0
RATES_MBIT = (100, 200, 400)
UDP_CAPACITY_RATES_MBIT = (200, 400, 800)
IPERF_UDP_PORT = 5402
PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def measure_owd(
    bed: Testbed, number: int, *, rate_mbit: float, seconds: float, port: int = PROBE_PORT
) -> dict[str, Any]:
    """One-way delay client -> server through uplink ``number``: a ``delay_probe`` summary."""
    t = bed.topology
    uplink = t.uplink(number)
    probe = [sys.executable, "-m", "fluxify.lab.delay_probe"]
    receiver = bed.spawn(
        t.server_ns,
        [*probe, "receive", "--port", str(port), "--seconds", f"{seconds + 15:g}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None  # spawned with stdout=PIPE
    if not receiver.stdout.readline().startswith('{"listening"'):
        raise HostError("The delay probe receiver did not start; see its stderr.")
    sender = [*probe, "send", "--host", str(t.server_v4.ip), "--port", str(port)]
    sender += ["--rate-mbit", f"{rate_mbit:g}", "--seconds", f"{seconds:g}"]
    sender += ["--dev", uplink.ifname]
    sent = json.loads(bed.run(t.client_ns, sender, timeout=seconds + 30).stdout)
    out, _ = receiver.communicate(timeout=seconds + 30)
    summary: dict[str, Any] = json.loads(out.splitlines()[-1])
    summary["sent"] = sent["sent"]
    summary["lost"] = sent["sent"] - summary["received"]
    return summary


def ping_rtt(bed: Testbed, number: int, count: int = 100) -> dict[str, float]:
    """min/avg/max/mdev of ``count`` pings (10 ms apart) to the server through ``number``."""
    t = bed.topology
    argv = ["ping", "-n", "-q", "-i", "0.01", "-c", str(count)]
    argv += ["-I", t.uplink(number).ifname, str(t.server_v4.ip)]
    done = bed.run(t.client_ns, argv, timeout=count + 10)
    found = PING_RTT.search(done.stdout)
    if found is None:
        raise HostError(f"Cannot read ping's summary: {done.stdout[-200:]!r}")
    low, avg, high, mdev = (float(x) for x in found.groups())
    return {"min_ms": low, "avg_ms": avg, "max_ms": high, "mdev_ms": mdev}


def accuracy(summary: dict[str, Any], floor_ms: float, configured_ms: float) -> dict[str, Any]:
    """Error of the emulated delay: measured one-way delay - path floor - configured delay."""
    owd = summary["owd_ms"]
    errors = sorted(abs(d - floor_ms - configured_ms) for d in summary["sample_ms"])
    return {
        "configured_ms": configured_ms,
        "median_error_ms": round(owd["p50"] - floor_ms - configured_ms, 4),
        "p99_error_ms": round(owd["p99"] - floor_ms - configured_ms, 4),
        "p1_error_ms": round(owd["p1"] - floor_ms - configured_ms, 4),
        "max_error_ms": round(owd["p100"] - floor_ms - configured_ms, 4),
        "p99_abs_error_ms_sampled": round(errors[int(0.99 * (len(errors) - 1))], 4),
        "lost": summary["lost"],
        "reordered": summary["reordered"],
    }


def run(seconds: float, *, realtime: bool = True) -> dict[str, Any]:
    """Every measurement of the module docstring, in one fresh bed."""
    results: dict[str, Any] = {"seconds_per_run": seconds, "realtime": realtime}
    with build_testbed(uplinks=1, prefix="fxdb") as bed:
        floor = measure_owd(bed, 1, rate_mbit=100, seconds=seconds)
        floor_ms = floor["owd_ms"]["p50"]
        results["floor_100mbit"] = _strip(floor)
        bed.set_delay(1, ACCURACY_DELAY_MS, direction="up", realtime=realtime)
        for rate in RATES_MBIT:
            summary = measure_owd(bed, 1, rate_mbit=rate, seconds=seconds)
            results[f"owd_{rate}mbit"] = _strip(summary)
            results[f"accuracy_{rate}mbit"] = accuracy(summary, floor_ms, ACCURACY_DELAY_MS)
            results[f"sample_{rate}mbit_ms"] = summary["sample_ms"]
        results["emulator_counters_accuracy"] = bed.clear_delay(1)["up"]
        bed.set_delay(1, CAPACITY_DELAY_MS, realtime=realtime)
        results["capacity"] = _capacity(bed, seconds)
        results["udp_capacity"] = [
            _udp_capacity(bed, rate, seconds) for rate in UDP_CAPACITY_RATES_MBIT
        ]
        bed.set_delay(1, ACCURACY_DELAY_MS / 2, realtime=realtime)
        results["ping_10ms_each_way"] = ping_rtt(bed, 1)
        results["emulator_counters_capacity"] = bed.clear_delay(1)
    return results


def _capacity(bed: Testbed, seconds: float) -> dict[str, float]:
    t = bed.topology
    common: dict[str, Any] = {"client_ns": t.client_ns, "server_ns": t.server_ns}
    common |= {"target": str(t.server_v4.ip), "seconds": seconds, "bind_dev": "wan1"}
    upload = iperf(bed, **common)
    time.sleep(0.5)
    download = iperf(bed, **common, reverse=True)
    return {
        "delay_each_way_ms": CAPACITY_DELAY_MS,
        "tcp_upload_mbit_s": upload.mbit_s,
        "tcp_download_mbit_s": download.mbit_s,
        "upload_retransmits": upload.retransmits,
        "download_retransmits": download.retransmits,
    }


def _udp_capacity(bed: Testbed, rate_mbit: float, seconds: float) -> dict[str, float]:
    """iperf3 UDP (a C sender, unlike the probe) at ``rate_mbit`` through the delayed uplink."""
    t = bed.topology
    server = bed.spawn(
        t.server_ns,
        ["iperf3", "-s", "-1", "-p", str(IPERF_UDP_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)  # let it listen
        argv = ["iperf3", "-c", str(t.server_v4.ip), "-p", str(IPERF_UDP_PORT), "-u", "-J"]
        # 8 MB socket buffers: iperf3's default (~200 KB) overflows at the receiver on its own.
        argv += ["-b", f"{rate_mbit:g}M", "-l", "1472", "-w", "8M", "-t", f"{seconds:g}"]
        argv += ["--bind-dev", "wan1"]
        done = bed.run(t.client_ns, argv, check=False, timeout=seconds + 30)
    finally:
        server.wait(timeout=10)
    total = json.loads(done.stdout or "{}").get("end", {}).get("sum", {})
    if not total:
        raise HostError(f"iperf3 -u failed: {done.stdout[-200:] or done.stderr[-200:]}")
    return {
        "offered_mbit_s": rate_mbit,
        "received_mbit_s": round(
            total["bits_per_second"] * (1 - total["lost_percent"] / 100) / 1e6, 1
        ),
        "lost_percent": round(total["lost_percent"], 3),
    }


def _strip(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if key != "sample_ms"}


def report(results: dict[str, Any]) -> str:
    """The human-readable table."""
    lines = [f"path floor (no emulator), one-way: {results['floor_100mbit']['owd_ms']['p50']} ms"]
    for rate in RATES_MBIT:
        a = results[f"accuracy_{rate}mbit"]
        errors = " ".join(
            f"{name} {a[f'{name}_error_ms']:+.3f}" for name in ("median", "p1", "p99", "max")
        )
        lines.append(
            f"{rate:>4} Mbit/s UDP, {a['configured_ms']:g} ms: error {errors} ms,"
            f" lost {a['lost']}, reordered {a['reordered']}"
        )
    c = results["capacity"]
    lines.append(
        f"TCP through {c['delay_each_way_ms']:g} ms each way: upload {c['tcp_upload_mbit_s']} "
        f"Mbit/s, download {c['tcp_download_mbit_s']} Mbit/s"
    )
    for u in results["udp_capacity"]:
        lines.append(
            f"iperf3 UDP offered {u['offered_mbit_s']:g} Mbit/s: received"
            f" {u['received_mbit_s']} Mbit/s, lost {u['lost_percent']} %"
        )
    p = results["ping_10ms_each_way"]
    lines.append(f"ping, 10 ms each way: min/avg/max {p['min_ms']}/{p['avg_ms']}/{p['max_ms']} ms")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    """Histogram of the sampled one-way delays at each rate; False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415  (optional: the bench extra)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(7, 4))
    for rate in RATES_MBIT:
        axes.hist(results[f"sample_{rate}mbit_ms"], bins=80, alpha=0.6, label=f"{rate} Mbit/s")
    axes.axvline(ACCURACY_DELAY_MS, color="black", linestyle="--", label="configured")
    axes.set_xlabel("one-way delay (ms), sampled packets")
    axes.set_ylabel("packets")
    axes.set_title("Delay emulator: configured 20 ms, client -> server")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for JSON/PNG")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument(
        "--normal-scheduling", action="store_true", help="run the emulator without SCHED_FIFO"
    )
    args = parser.parse_args(argv)
    results = run(args.seconds, realtime=not args.normal_scheduling)
    print(report(results))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "delay-bench.json").write_text(json.dumps(results, indent=2) + "\n")
    if plot(results, args.out / "delay-bench.png"):
        print(f"wrote {args.out / 'delay-bench.json'} and {args.out / 'delay-bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
