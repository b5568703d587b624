"""Command-line parsing and entry points: ``fluxify-server``, ``fluxify-client``, ``fluxify-bench``.

Flags are seed-compatible (SPEC §6): Go-style single-dash long flags (``-port 8000``,
``-port=8000``), each also spelled with two dashes. A bad or unknown flag gets one line on stderr
that names it, and exit status 2. Nothing here knows how the runners work.
"""

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fluxify.client.config import DEFAULT_CONNECTIONS as CLIENT_DEFAULT_CONNECTIONS
from fluxify.client.config import DEFAULT_CONTROL_PORT as CLIENT_DEFAULT_CONTROL_PORT
from fluxify.client.config import ClientConfig, Mode
from fluxify.errors import FluxifyError
from fluxify.event_loop import run_event_loop
from fluxify.flags import (
    RUNTIME_ERROR,
    FlagParser,
    add_flag,
    address_list,
    host_list,
    int_value,
    interface_list,
    listen_address,
    log_level,
    number_list,
    parse_server_address,
    port_value,
    weight_list,
)
from fluxify.protocol.rekey import DEFAULT_REKEY_INTERVAL_S
from fluxify.server.config import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_HOSTS,
    DEFAULT_UDP_PORT,
    ServerConfig,
)

if TYPE_CHECKING:
    from fluxify.observe.statsfile import Snapshot

# -- fluxify-server ---------------------------------------------------------------------------


def server_parser() -> FlagParser:
    parser = FlagParser(
        prog="fluxify-server",
        description="Fluxify bonding server: mTLS control plane, UDP data plane, TUN and NAT.",
        allow_abbrev=False,
    )
    add_flag(
        parser,
        "port",
        type=port_value,
        default=DEFAULT_UDP_PORT,
        metavar="N",
        help=f"UDP data port (default {DEFAULT_UDP_PORT})",
    )
    add_flag(
        parser,
        "ctrl",
        type=port_value,
        default=DEFAULT_CONTROL_PORT,
        metavar="N",
        help=f"TLS control port (default {DEFAULT_CONTROL_PORT})",
    )
    add_flag(
        parser,
        "iface",
        default="",
        metavar="NAME",
        type=_single_interface,
        help="TUN device name (default: the kernel picks tunN)",
    )
    add_flag(
        parser,
        "pki",
        type=Path,
        default=Path("pki"),
        metavar="DIR",
        help="PKI directory (default ./pki)",
    )
    add_flag(
        parser,
        "regen",
        action="store_true",
        help="regenerate the CA and the server certificate (invalidates client certs)",
    )
    add_flag(
        parser,
        "hosts",
        type=host_list,
        default=DEFAULT_HOSTS,
        metavar="LIST",
        help="comma-separated names/IPs for the server certificate "
        f"(default {','.join(DEFAULT_HOSTS)})",
    )
    add_flag(parser, "tui", action="store_true", help="run the certificate manager TUI")
    add_flag(
        parser,
        "protocol",
        choices=("v2", "v1"),
        default="v2",
        help="v2 (default) accepts the bond engine's extension from Fluxify clients; v1 "
        "answers every client as the original server would (comparisons, debugging)",
    )
    add_flag(
        parser,
        "rekey-interval",
        type=_duration,
        default=DEFAULT_REKEY_INTERVAL_S,
        dest="rekey_interval",
        metavar="D",
        help="a new data-plane key epoch for every session at least this often "
        "(default 1h; e.g. 30m, 90s; feature rekey, Fluxify peers only)",
    )
    add_flag(
        parser,
        "new-client",
        metavar="NAME",
        dest="new_client",
        help="issue a client certificate and bundle, print the paths, exit",
    )
    add_flag(
        parser,
        "reissue",
        action="store_true",
        help="with -new-client: replace the certificate NAME has (its old bundle stops working)",
    )
    add_flag(
        parser,
        "revoke",
        metavar="NAME",
        help="revoke every certificate of a client (a running server ends its session), exit",
    )
    _add_service_flags(parser, "fluxify-server", "127.0.0.1:9108")
    return parser


_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MIN_REKEY_INTERVAL_S = 1.0


def _duration(text: str) -> float:
    """A Go-style duration (``90s``, ``30m``, ``1h``) or plain seconds, at least 1 s."""
    value = text.strip()
    unit = next((u for u in ("ms", "s", "m", "h") if value.endswith(u)), "")
    try:
        seconds = float(value[: len(value) - len(unit)]) * _DURATION_UNITS_S.get(unit, 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 30m or 1h, got {text!r}"
        ) from None
    if not seconds >= MIN_REKEY_INTERVAL_S or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected at least 1s, got {text!r}")
    return seconds


def _single_interface(text: str) -> str:
    names = interface_list(text)
    if len(names) > 1:
        raise argparse.ArgumentTypeError(f"expected one interface name, got {text!r}")
    return names[0] if names else ""


def parse_server_args(argv: Sequence[str]) -> ServerConfig:
    parser = server_parser()
    ns = parser.parse_args(argv)
    if ns.new_client is not None and ns.revoke is not None:
        parser.error(
            "-revoke and -new-client cannot be used together: "
            "revoke, then reissue with -new-client NAME -reissue"
        )
    if ns.reissue and ns.new_client is None:
        parser.error("-reissue needs -new-client NAME: it says which client to reissue")
    return ServerConfig(
        udp_port=ns.port,
        control_port=ns.ctrl,
        tun_name=ns.iface,
        pki_dir=ns.pki,
        regenerate=ns.regen,
        hosts=ns.hosts,
        tui=ns.tui,
        new_client=ns.new_client,
        reissue=ns.reissue,
        revoke=ns.revoke,
        verbose=ns.verbose,
        log_level="debug" if ns.verbose else ns.log_level,
        metrics=ns.metrics,
        protocol=ns.protocol,
        rekey_interval_s=ns.rekey_interval,
    )


def server_main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["status"]:
        from fluxify.observe.statsfile import read_server_snapshot  # noqa: PLC0415

        return _status("fluxify-server", args[1:], lambda: read_server_snapshot(_state_dir()))
    config = parse_server_args(args)
    return _run("fluxify-server", lambda: _dispatch_server(config))


def _dispatch_server(config: ServerConfig) -> int:
    if config.new_client is not None:
        return _issue_client(config)
    if config.revoke is not None:
        return _revoke_client(config)
    if config.tui:
        from fluxify.tui.server_app import run_server_tui  # noqa: PLC0415

        return run_server_tui(config)
    from fluxify.server.app import run_server  # noqa: PLC0415 - keeps -h fast

    _setup_logging(config.log_level)
    if config.metrics is not None:
        from fluxify.observe.statsfile import read_server_snapshot  # noqa: PLC0415

        _serve_metrics(config.metrics, "server", lambda: read_server_snapshot(_state_dir()))
    run_event_loop(run_server(config, _state_dir()))
    return 0


def _issue_client(config: ServerConfig) -> int:
    assert config.new_client is not None
    from fluxify.pki.authority import ensure_server_pki, issue_client  # noqa: PLC0415
    from fluxify.pki.files import sanitize_client_name  # noqa: PLC0415

    sanitize_client_name(config.new_client)  # refuse a bad name before touching the PKI
    # Without an explicit -hosts, issuing a client must not rename an existing server cert.
    hosts = None if config.hosts == DEFAULT_HOSTS else config.hosts
    setup = ensure_server_pki(config.pki_dir, hosts, regenerate=config.regenerate)
    for change in setup.changes:
        print(change)
    issued = issue_client(setup.layout, config.new_client, reissue=config.reissue)
    print(f"issued client certificate {issued.name!r}:")
    print(f"  certificate: {issued.cert} (dated copy: {issued.dated_cert})")
    print(f"  key:         {issued.key} (dated copy: {issued.dated_key})")
    print(f"  bundle:      {issued.bundle}")
    print(f"copy the bundle to the client as ~/.fluxify/{issued.name}.pem")
    return 0


def _revoke_client(config: ServerConfig) -> int:
    """What the TUI's Revoke does; never creates a PKI (a mistyped -pki finds no client)."""
    assert config.revoke is not None
    from fluxify.pki.files import ServerPkiLayout, sanitize_client_name  # noqa: PLC0415
    from fluxify.pki.revocation import client_serials, revoke_client, revoked_path  # noqa: PLC0415

    name = sanitize_client_name(config.revoke)  # the stem -new-client wrote; no glob characters
    layout = ServerPkiLayout(config.pki_dir)
    added = revoke_client(layout, name)
    already = len(client_serials(layout, name)) - len(added)
    print(
        f"revoked {len(added)} certificate(s) of client {name!r} in {revoked_path(layout)}"
        + (f" ({already} already there)" if already else "")
        + f"; a running server ends {name}'s live session within about a second;"
        f" reissue with -new-client {name} -reissue to let it back in"
    )
    return 0


# -- fluxify-client ---------------------------------------------------------------------------


def client_parser() -> FlagParser:
    parser = FlagParser(
        prog="fluxify-client",
        description="Fluxify client: bond (-b) or load-balance (-l) several uplinks; "
        "no mode flag opens the TUI.",
        allow_abbrev=False,
    )
    add_flag(
        parser,
        "server",
        metavar="HOST[:PORT]",
        help="control endpoint of the server (port defaults to -ctrl)",
    )
    add_flag(
        parser,
        "ifaces",
        type=interface_list,
        default=(),
        metavar="A,B",
        help="comma-separated uplink interfaces",
    )
    add_flag(
        parser,
        "backup",
        type=interface_list,
        default=(),
        metavar="A,B",
        help="of -ifaces, the uplinks that carry data only while every other one is dead (a "
        "metered LTE modem): e.g. -ifaces eth0,wwan0 -backup wwan0; an idle backup costs "
        "under 1 MB a day of heartbeats and takes over within a second",
    )
    add_flag(
        parser,
        "protocol",
        choices=("v2", "v1"),
        default="v2",
        help="v2 (default) offers the bond engine's extension to a Fluxify server; v1 speaks "
        "the original protocol only (comparisons, debugging)",
    )
    add_flag(
        parser,
        "rekey-interval",
        type=_duration,
        default=DEFAULT_REKEY_INTERVAL_S,
        dest="rekey_interval",
        metavar="D",
        help="ask the server for a new data-plane key epoch at least this often "
        "(default 1h; e.g. 30m, 90s; feature rekey, Fluxify peers only)",
    )
    add_flag(
        parser,
        "ips",
        type=address_list,
        default=(),
        metavar="IP,IP",
        help="source IPs, paired with -ifaces by position",
    )
    add_flag(
        parser,
        "conns",
        type=int_value,
        default=CLIENT_DEFAULT_CONNECTIONS,
        metavar="N",
        help="number of UDP sockets; <= 0 means one per interface (default 2)",
    )
    add_flag(
        parser,
        "pki",
        type=Path,
        default=None,
        metavar="DIR",
        help="client PKI directory (default ~/.fluxify)",
    )
    add_flag(
        parser,
        "client",
        default="",
        metavar="NAME",
        help="client name; selects <pki>/<NAME>.pem (default: the only bundle there)",
    )
    add_flag(
        parser,
        "ctrl",
        type=port_value,
        default=CLIENT_DEFAULT_CONTROL_PORT,
        metavar="N",
        help="control port when -server has none (default 8443)",
    )
    add_flag(parser, "b", action="store_true", dest="bonding", help="bonding mode, headless")
    add_flag(
        parser,
        "l",
        action="store_true",
        dest="load_balance",
        help="load-balance mode, headless (wins over -b)",
    )
    add_flag(
        parser,
        "policy-routing",
        action="store_true",
        dest="policy_routing",
        help="accepted for seed compatibility; policy routing is always applied",
    )
    add_flag(
        parser,
        "gws",
        type=address_list,
        default=(),
        metavar="IP,IP",
        help="gateways, paired with -ifaces by position (default: discovered)",
    )
    add_flag(
        parser,
        "probe",
        type=address_list,
        default=(),
        metavar="IP,IP",
        help="load-balance: addresses to ping through each uplink, v4 and/or v6 "
        "(default 1.1.1.1,8.8.8.8 and their IPv6 twins)",
    )
    add_flag(
        parser,
        "weights",
        type=weight_list,
        default=(),
        metavar="N,N",
        help="load-balance: nexthop weight 1..256 per interface, by -ifaces position (default 1)",
    )
    add_flag(
        parser, "tui-autostart", action="store_true", dest="tui_autostart", help=argparse.SUPPRESS
    )
    _add_service_flags(parser, "fluxify-client", "127.0.0.1:9109")
    return parser


def parse_client_args(argv: Sequence[str]) -> ClientConfig:
    parser = client_parser()
    ns = parser.parse_args(argv)
    explicit = frozenset(key for key, value in vars(ns).items() if value != parser.get_default(key))
    server = None
    if ns.server is not None:
        try:
            server = parse_server_address(ns.server, ns.ctrl)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"argument -server: {exc}")
    if ns.load_balance:
        mode = Mode.LOAD_BALANCE
    elif ns.bonding:
        mode = Mode.BONDING
    else:
        mode = Mode.TUI
    unknown = [name for name in ns.backup if ns.ifaces and name not in ns.ifaces]
    if unknown:
        parser.error(f"argument -backup: {unknown[0]!r} is not one of -ifaces")
    return ClientConfig(
        mode=mode,
        server=server,
        ifaces=ns.ifaces,
        backup_ifaces=ns.backup,
        protocol=ns.protocol,
        rekey_interval_s=ns.rekey_interval,
        source_ips=ns.ips,
        connections=ns.conns,
        pki_dir=ns.pki,
        client_name=ns.client.strip(),
        control_port=ns.ctrl,
        policy_routing=ns.policy_routing,
        gateways=ns.gws,
        probe_targets=ns.probe,
        weights=ns.weights,
        tui_autostart=ns.tui_autostart,
        verbose=ns.verbose,
        log_level="debug" if ns.verbose else ns.log_level,
        metrics=ns.metrics,
        explicit=explicit,
    )


def client_main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["status"]:
        from fluxify.observe.statsfile import read_client_snapshot  # noqa: PLC0415

        return _status("fluxify-client", args[1:], lambda: read_client_snapshot(_state_dir()))
    config = parse_client_args(args)
    return _run("fluxify-client", lambda: _dispatch_client(config))


def _dispatch_client(config: ClientConfig) -> int:
    # Imports are local: they keep -h fast and each mode loads only what it uses.
    from fluxify.client.settings import default_pki_dir  # noqa: PLC0415

    if config.mode is Mode.TUI or config.tui_autostart:
        from fluxify.tui.client_app import run_client_tui  # noqa: PLC0415

        return run_client_tui(config, _state_dir())  # merges saved settings itself
    from fluxify.client.settings import merged_config  # noqa: PLC0415

    config = merged_config(config)  # explicit flags win over ~/.fluxify/config.json
    _setup_logging(config.log_level)
    if config.metrics is not None:
        from fluxify.observe.statsfile import read_client_snapshot  # noqa: PLC0415

        _serve_metrics(config.metrics, "client", lambda: read_client_snapshot(_state_dir()))
    if config.mode is Mode.LOAD_BALANCE:
        from fluxify.client.loadbalance import run_load_balance  # noqa: PLC0415

        run_event_loop(run_load_balance(config, _state_dir()))
        return 0
    from fluxify.client.bonding import run_bonding  # noqa: PLC0415

    pki_dir = config.pki_dir or default_pki_dir()
    run_event_loop(run_bonding(config, pki_dir, _state_dir()))
    return 0


# -- fluxify-bench ----------------------------------------------------------------------------


def bench_parser() -> FlagParser:
    parser = FlagParser(prog="fluxify-bench", description="Fluxify benchmarks.")
    _add_version_flag(parser)
    sub = parser.add_subparsers(dest="suite", required=True, parser_class=FlagParser)
    codec = sub.add_parser("codec", help="seal/open cost per packet of the protocol core")
    codec.add_argument(
        "--packets",
        type=int_value,
        default=20_000,
        metavar="N",
        help="packets per measurement (default 20000)",
    )
    codec.add_argument(
        "--size",
        type=int_value,
        default=1400,
        metavar="BYTES",
        help="IP packet size (default 1400)",
    )
    codec.add_argument(
        "--out",
        type=Path,
        default=Path("out/bench-codec"),
        metavar="PREFIX",
        help="write PREFIX.json and PREFIX.png (default out/bench-codec)",
    )
    lab = sub.add_parser("lab", help="the namespace lab scenarios: throughput, failover, latency")
    lab.add_argument(
        "--scenarios",
        default="",
        metavar="A,B",
        help="comma-separated subset (default all: single, small, bond-2x50, bond-80-20, "
        "delay-10-40, demo-10-30, delay-10-100, lossy, failover, latency, cpu, cpu-2x50, flood, "
        "integrity, capacity)",
    )
    lab.add_argument(
        "--runs", type=int_value, default=3, metavar="N", help="runs per quantity (default 3)"
    )
    lab.add_argument(
        "--seconds",
        type=int_value,
        default=6,
        metavar="N",
        help="length of each iperf3 run (default 6)",
    )
    lab.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip OpenVPN and wireguard-go (default: install them with apt-get if missing)",
    )
    lab.add_argument(
        "--out",
        type=Path,
        default=Path("out/bench-lab"),
        metavar="PREFIX",
        help="write PREFIX.json and PREFIX.png (default out/bench-lab)",
    )
    return parser


def bench_main(argv: Sequence[str] | None = None) -> int:
    ns = bench_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if ns.suite == "lab":
        from fluxify.lab.bench import SCENARIOS, run_lab_bench  # noqa: PLC0415 - only here

        chosen = [name.strip() for name in ns.scenarios.split(",") if name.strip()]
        return _run(
            "fluxify-bench",
            lambda: run_lab_bench(
                ns.out,
                scenarios=chosen or tuple(SCENARIOS),
                runs=ns.runs,
                seconds=ns.seconds,
                baselines=not ns.no_baselines,
            ),
        )
    from fluxify.lab.codec_bench import run_codec_bench  # noqa: PLC0415 - heavy, only here

    return _run(
        "fluxify-bench", lambda: run_codec_bench(packets=ns.packets, size=ns.size, out=ns.out)
    )


# -- fluxify-lab ------------------------------------------------------------------------------


def lab_parser() -> FlagParser:
    parser = FlagParser(
        prog="fluxify-lab",
        description="The namespace lab: emulated uplinks, a server and an internet host.",
    )
    _add_version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=FlagParser)
    demo = sub.add_parser("demo", help="two shaped uplinks, each alone and bonded; table + plot")
    demo.add_argument(
        "--seconds",
        type=int_value,
        default=8,
        metavar="N",
        help="length of each iperf3 run (default 8)",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("out/demo"),
        metavar="PREFIX",
        help="write PREFIX.json and PREFIX.png (default out/demo)",
    )
    up = sub.add_parser("up", help="build a lab and hold it until Ctrl-C")
    up.add_argument("--uplinks", type=int_value, default=2, metavar="N", help="default 2")
    up.add_argument(
        "--rate",
        type=number_list,
        default=(),
        metavar="MBIT,..",
        help="per-uplink rate in Mbit/s (0: unshaped)",
    )
    up.add_argument(
        "--delay",
        type=number_list,
        default=(),
        metavar="MS,..",
        help="per-uplink one-way delay each way in ms",
    )
    up.add_argument(
        "--loss",
        type=number_list,
        default=(),
        metavar="PCT,..",
        help="per-uplink random loss in percent (whole numbers)",
    )
    sub.add_parser("down", help="remove what a killed 'up' left behind")
    soak = sub.add_parser("soak", help="mixed traffic with wan2 flapping; fails on growth")
    soak.add_argument("--minutes", type=float, default=60.0, metavar="N", help="default 60")
    soak.add_argument("--sample-seconds", type=float, default=10.0, metavar="S", help="default 10")
    soak.add_argument(
        "--out", type=Path, default=Path("out/soak.json"), metavar="FILE", help="JSON report"
    )
    soak.add_argument(
        "--rekey-seconds",
        type=float,
        metavar="S",
        help="both ends rotate their keys this often (default: every 5 minutes)",
    )
    return parser


def lab_main(argv: Sequence[str] | None = None) -> int:
    parser = lab_parser()
    ns = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if ns.command == "down":
        from fluxify.lab.standing import remove_leftovers  # noqa: PLC0415

        return _run("fluxify-lab", remove_leftovers)
    if ns.command == "up":
        return _lab_up(parser, ns)
    if ns.command == "soak":
        if ns.minutes <= 0 or ns.sample_seconds <= 0:
            parser.error("argument --minutes/--sample-seconds: expected a positive number")
        if ns.rekey_seconds is not None and ns.rekey_seconds < 1:
            parser.error("argument --rekey-seconds: expected at least 1")
        from fluxify.lab.soak import REKEY_S, run_soak  # noqa: PLC0415 - heavy, only here

        return _run(
            "fluxify-lab",
            lambda: run_soak(
                ns.minutes, ns.out, sample_s=ns.sample_seconds, rekey_s=ns.rekey_seconds or REKEY_S
            ),
        )
    if ns.seconds < 1:
        parser.error("argument --seconds: expected at least 1")
    from fluxify.lab.demo import run_demo  # noqa: PLC0415 - heavy, only here

    return _run("fluxify-lab", lambda: run_demo(ns.out, seconds=ns.seconds))


def _lab_up(parser: FlagParser, ns: argparse.Namespace) -> int:
    from fluxify.lab.standing import UplinkShape, hold_lab  # noqa: PLC0415
    from fluxify.lab.topology import MAX_UPLINKS  # noqa: PLC0415

    if not 1 <= ns.uplinks <= MAX_UPLINKS:
        parser.error(f"argument --uplinks: expected 1..{MAX_UPLINKS}")
    for flag in ("rate", "delay", "loss"):
        if len(getattr(ns, flag)) > ns.uplinks:
            parser.error(f"argument --{flag}: more values than --uplinks ({ns.uplinks})")

    def at(values: tuple[float, ...], index: int) -> float:
        return values[index] if index < len(values) else 0.0

    shapes = [
        UplinkShape(at(ns.rate, i), at(ns.delay, i), round(at(ns.loss, i)))
        for i in range(ns.uplinks)
    ]
    if any(not 0 <= s.loss_percent <= 100 for s in shapes):
        parser.error("argument --loss: expected percentages 0..100")
    return _run("fluxify-lab", lambda: hold_lab(shapes))


# -- shared -----------------------------------------------------------------------------------


def _state_dir() -> Path:
    from fluxify.linux.statefiles import state_dir_from_env  # noqa: PLC0415 - keeps -h fast

    return state_dir_from_env()


def _add_service_flags(parser: FlagParser, prog: str, metrics_example: str) -> None:
    """The flags every long-running program shares: logging, metrics, version, status."""
    add_flag(
        parser,
        "v",
        action="store_true",
        dest="verbose",
        help="verbose logging (= -log-level debug)",
    )
    add_flag(
        parser,
        "log-level",
        dest="log_level",
        type=log_level,
        default="info",
        metavar="LEVEL",
        help="debug, info, warning or error (default info)",
    )
    add_flag(
        parser,
        "metrics",
        type=listen_address,
        default=None,
        metavar="HOST:PORT",
        help=f"serve Prometheus /metrics on this address only, e.g. {metrics_example} "
        "(default: off)",
    )
    add_flag(
        parser,
        "no-offload",
        action=_NoOffload,
        nargs=0,
        help="move packets one at a time: no UDP GSO/GRO, no TUN TSO (debugging; "
        "the same as FLUXIFY_NO_OFFLOAD=1)",
    )
    _add_version_flag(parser)
    parser.epilog = (
        f"'{prog} status [-json]' prints the live state of the running {prog.split('-')[1]} "
        "(paths, RTT, rates, shares, drops)."
    )


class _NoOffload(argparse.Action):
    """``-no-offload``: sets FLUXIFY_NO_OFFLOAD=1, which the data plane reads when it starts."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        os.environ["FLUXIFY_NO_OFFLOAD"] = "1"


def _add_version_flag(parser: FlagParser) -> None:
    add_flag(parser, "version", action="version", version=f"%(prog)s {_version()}")


def _version() -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version("fluxify")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def status_parser(prog: str) -> FlagParser:
    parser = FlagParser(
        prog=f"{prog} status",
        description=f"The live state of the running {prog}, from its stats file.",
    )
    add_flag(parser, "json", action="store_true", help="print JSON for scripts")
    return parser


def _status(prog: str, argv: Sequence[str], read: "Callable[[], Snapshot]") -> int:
    """Print the table (or JSON); one line and exit 1 when nothing runs."""
    from fluxify.observe.statsfile import NotRunningError  # noqa: PLC0415
    from fluxify.observe.status import (  # noqa: PLC0415
        status_json,
        status_table,
        with_measured_rates,
    )

    ns = status_parser(prog).parse_args(argv)
    try:
        snapshot, rates = with_measured_rates(read)
    except NotRunningError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return RUNTIME_ERROR
    print(status_json(snapshot, rates) if ns.json else status_table(snapshot, rates))
    return 0


def _serve_metrics(address: tuple[str, int], role: str, read: "Callable[[], Snapshot]") -> None:
    from fluxify.observe.metrics import registry_for, serve_metrics  # noqa: PLC0415
    from fluxify.observe.statsfile import NotRunningError  # noqa: PLC0415

    def fresh_or_none() -> "Snapshot | None":
        try:
            return read()
        except NotRunningError:
            return None

    serve_metrics(*address, registry_for(fresh_or_none, role))


JOURNAL_STREAM_ENV = "JOURNAL_STREAM"  # set by systemd when stderr is the journal
SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    """``<priority>name: message``: journald stamps the time and maps the level itself."""

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 6)
        return "\n".join(
            f"<{priority}>{line}" for line in super().format(record).splitlines() or [""]
        )


def stderr_is_journal(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> bool:
    """True when stderr is the journal stream systemd announced (device:inode match)."""
    announced = environ.get(JOURNAL_STREAM_ENV, "")
    device, _, inode = announced.partition(":")
    try:
        info = os.fstat(sys.stderr.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    if stderr_is_journal():
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def _run(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except FluxifyError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return RUNTIME_ERROR
    except KeyboardInterrupt:
        return 130
