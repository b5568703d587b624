"""Command lines (SPEC §6): every seed flag parses; every bad one gets one line and exit 2."""

import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path

import pytest

from fluxify.cli import client_main, parse_client_args, parse_server_args, server_main
from fluxify.client.config import Mode, ServerAddress

SERVER_FLAGS = [
    "-port", "-ctrl", "-iface", "-pki", "-regen", "-hosts", "-tui", "-new-client", "-revoke", "-v",
]  # fmt: skip
CLIENT_FLAGS = [
    "-server", "-ifaces", "-ips", "-conns", "-pki", "-client", "-ctrl", "-b", "-l",
    "-policy-routing", "-gws", "-v",
]  # fmt: skip


@pytest.mark.parametrize(
    ("script", "flags"), [("fluxify-server", SERVER_FLAGS), ("fluxify-client", CLIENT_FLAGS)]
)
def test_help_lists_every_seed_flag(script: str, flags: list[str]) -> None:
    result = subprocess.run(
        [Path(sys.executable).parent / script, "-h"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for flag in flags:
        assert f"{flag}," in result.stdout or f"{flag} " in result.stdout, flag


def test_server_defaults_and_seed_spellings() -> None:
    config = parse_server_args([])
    assert (config.udp_port, config.control_port, config.pki_dir) == (8000, 8443, Path("pki"))
    assert config.hosts == ("127.0.0.1", "localhost")
    config = parse_server_args(
        [
            "-port=9000",
            "--ctrl",
            "9443",
            "-iface",
            "flx0",
            "-hosts",
            " a.example, 10.0.0.1,,",
            "-regen",
        ]
    )
    assert (config.udp_port, config.control_port, config.tun_name) == (9000, 9443, "flx0")
    assert config.hosts == ("a.example", "10.0.0.1") and config.regenerate


def test_client_flags_parse_into_the_config() -> None:
    config = parse_client_args(
        ["-b", "-server", "vpn.example", "-ifaces", "eth0,wlan0",
         "-ips", "192.0.2.1,2001:db8::1", "-conns", "0", "-client", "alice", "-ctrl", "9443",
         "-gws", "192.0.2.254"]
    )  # fmt: skip
    assert config.mode is Mode.BONDING
    assert config.server == ServerAddress("vpn.example", 9443)  # -ctrl fills the missing port
    assert config.ifaces == ("eth0", "wlan0")
    assert config.source_ips == (ip_address("192.0.2.1"), ip_address("2001:db8::1"))
    assert (config.connections, config.client_name) == (0, "alice")
    assert {"bonding", "server", "ifaces", "client", "ctrl"} <= config.explicit
    assert "pki" not in config.explicit


def test_load_balance_wins_over_bonding_and_no_mode_means_tui() -> None:
    assert parse_client_args(["-b", "-l"]).mode is Mode.LOAD_BALANCE
    assert parse_client_args([]).mode is Mode.TUI


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1:9000", ServerAddress("10.0.0.1", 9000)),
        ("host", ServerAddress("host", 8443)),
        ("[2001:db8::1]:9000", ServerAddress("2001:db8::1", 9000)),
        ("[2001:db8::1]", ServerAddress("2001:db8::1", 8443)),
        ("2001:db8::1", ServerAddress("2001:db8::1", 8443)),  # the original refused this
    ],
)
def test_server_address_forms(text: str, expected: ServerAddress) -> None:
    assert parse_client_args(["-server", text]).server == expected


@pytest.mark.parametrize(
    ("main", "argv", "flag"),
    [
        (server_main, ["-port", "abc"], "-port"),
        (server_main, ["-port", "70000"], "-port"),
        (server_main, ["-ctrl"], "-ctrl"),
        (server_main, ["-iface", "a/b"], "-iface"),
        (server_main, ["-bogus"], "-bogus"),
        (server_main, ["stray"], "stray"),
        (server_main, ["-revoke", "a", "-new-client", "a"], "-new-client"),
        (client_main, ["-ifaces", "eth0,this-name-is-too-long"], "-ifaces"),
        (client_main, ["-ifaces", "eth0,wlan0,eth0"], "-ifaces"),
        (client_main, ["-ips", "1.2.3.4,nope"], "-ips"),
        (client_main, ["-gws", "300.1.1.1"], "-gws"),
        (client_main, ["-conns", "two"], "-conns"),
        (client_main, ["-server", "host:notaport"], "-server"),
        (client_main, ["-server", "[2001:db8::1"], "-server"),
        (client_main, ["-serv", "x"], "-serv"),  # no prefix abbreviations
    ],
)
def test_bad_flags_get_one_line_naming_the_flag_and_exit_2(
    main: object, argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)  # type: ignore[operator]
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert flag in err


def test_revoke_with_new_client_names_both_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        server_main(["-new-client", "alice", "-revoke", "alice"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-revoke" in err and "-new-client" in err, err


def test_revoke_parses_into_the_config() -> None:
    assert parse_server_args(["-revoke", "alice"]).revoke == "alice"
    assert parse_server_args([]).revoke is None


def test_service_flags_parse_into_both_configs() -> None:
    server = parse_server_args(["-metrics", "127.0.0.1:9108", "-log-level", "WARNING"])
    assert (server.metrics, server.log_level) == (("127.0.0.1", 9108), "warning")
    client = parse_client_args(["-b", "--metrics", "[::1]:9109", "-v"])
    assert (client.metrics, client.log_level) == (("::1", 9109), "debug")
    assert parse_client_args([]).metrics is None and parse_server_args([]).log_level == "info"


@pytest.mark.parametrize(
    ("main", "argv", "flag"),
    [
        (server_main, ["-metrics", "9108"], "-metrics"),
        (server_main, ["-metrics", "::1:9108"], "-metrics"),
        (client_main, ["-metrics", "localhost:http"], "-metrics"),
        (client_main, ["-log-level", "loud"], "-log-level"),
    ],
)
def test_bad_service_flags(
    main: object, argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)  # type: ignore[operator]
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err, err


@pytest.mark.parametrize(
    "script", ["fluxify-server", "fluxify-client", "fluxify-lab", "fluxify-bench"]
)
def test_every_command_has_a_version(script: str) -> None:
    from importlib import metadata  # noqa: PLC0415

    result = subprocess.run(
        [Path(sys.executable).parent / script, "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{script} {metadata.version('fluxify')}"


def test_logs_under_systemd_carry_a_priority_and_no_time(tmp_path: Path) -> None:
    """JOURNAL_STREAM names stderr's device:inode when stderr is the journal (systemd.exec(5))."""
    script = (
        "import logging, os, sys\n"
        "from fluxify.cli import _setup_logging\n"
        "info = os.fstat(2)\n"
        "if sys.argv[1] == 'journal':\n"
        "    os.environ['JOURNAL_STREAM'] = f'{info.st_dev}:{info.st_ino}'\n"
        "_setup_logging('info')\n"
        "logging.getLogger('fluxify.x').warning('two\\nlines')\n"
        "logging.getLogger('fluxify.x').debug('hidden')\n"
    )
    outputs = {}
    for mode in ("journal", "terminal"):
        log = tmp_path / f"{mode}.log"
        with log.open("w") as stderr:
            subprocess.run([sys.executable, "-c", script, mode], stderr=stderr, check=True)
        outputs[mode] = log.read_text()
    assert outputs["journal"] == "<4>fluxify.x: two\n<4>lines\n"
    assert outputs["terminal"].count(" WARNING fluxify.x: two\n") == 1
    assert outputs["terminal"][:4].isdigit()  # the time, when no journal adds it
