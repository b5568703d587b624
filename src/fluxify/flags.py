"""Go-style command-line flags: the parser whose errors are one line, and the value parsers.

Every value parser raises ``ArgumentTypeError`` with what was expected; ``FlagParser`` turns that
into ``prog: -flag: what was wrong`` and exit status 2 (SPEC §6).
"""

import argparse
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, NoReturn

from fluxify.client.config import ServerAddress
from fluxify.server.config import DEFAULT_HOSTS

USAGE_ERROR = 2
RUNTIME_ERROR = 1
IFNAMSIZ = 16  # kernel limit, including the terminating NUL


class FlagParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line naming the flag, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: {one_line(message)}\n")

    def _get_option_tuples(self, option_string: str) -> list[Any]:
        # Python 3.11 still expands single-dash prefixes ("-serv" -> "-server") even with
        # allow_abbrev=False; Go's flag package never abbreviates, so neither do we.
        return []


def one_line(message: str) -> str:
    if message.startswith("unrecognized arguments: "):
        first = message.removeprefix("unrecognized arguments: ").split()[0]
        if first.startswith("-"):
            return f"unknown flag {first} (run with -h to list the flags)"
        return f"unexpected argument {first!r}: every setting is a flag (run with -h)"
    if message.startswith("argument "):
        names, _, reason = message.removeprefix("argument ").partition(": ")
        flag = names.split("/")[0]
        if reason == "expected one argument":
            reason = "expects a value"
        return f"{flag}: {reason}"
    return message


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs: object) -> None:
    parser.add_argument(f"-{name}", f"--{name}", **kwargs)  # type: ignore[arg-type]


# -- value parsers: each raises ArgumentTypeError with what was expected ----------------------


def port_value(text: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a port number in 1..65535, got {text!r}"
        ) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 1..65535, got {port}")
    return port


def int_value(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def csv_items(text: str) -> tuple[str, ...]:
    """Comma-separated items, trimmed, empties dropped, every value kept in order.

    Repeats are meaningful in positional lists: ``-gws 192.168.8.1,192.168.8.1`` is two
    identical LTE modems, one per ``-ifaces`` entry. Lists that are sets say so themselves.
    """
    return tuple(item.strip() for item in text.split(",") if item.strip())


def interface_list(text: str) -> tuple[str, ...]:
    """Interface names; one listed twice is refused (it would be one uplink counted twice)."""
    names = csv_items(text)
    for index, name in enumerate(names):
        if len(name) >= IFNAMSIZ or any(c in name for c in "/: \t") or name in {".", ".."}:
            raise argparse.ArgumentTypeError(
                f"{name!r} is not a valid interface name (at most {IFNAMSIZ - 1} characters, "
                "no '/', ':' or spaces)"
            )
        if name in names[:index]:
            raise argparse.ArgumentTypeError(f"{name!r} is listed twice; give each interface once")
    return names


def address_list(text: str) -> tuple[IPv4Address | IPv6Address, ...]:
    addresses = []
    for item in csv_items(text):
        try:
            addresses.append(ip_address(item))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated IP addresses, {item!r} is not one"
            ) from None
    return tuple(addresses)


def weight_list(text: str) -> tuple[int, ...]:
    weights = []
    for item in (item.strip() for item in text.split(",")):
        if not item.isdigit() or not 1 <= int(item) <= 256:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated weights in 1..256, {item!r} is not one"
            )
        weights.append(int(item))
    return tuple(weights)


def host_list(text: str) -> tuple[str, ...]:
    hosts = tuple(dict.fromkeys(csv_items(text)))  # certificate names: a set
    for host in hosts:
        if any(c.isspace() for c in host):
            raise argparse.ArgumentTypeError(f"host {host!r} contains spaces")
    return hosts or DEFAULT_HOSTS  # the original falls back to the default on an empty list


def parse_server_address(text: str, default_port: int) -> ServerAddress:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 literal."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise argparse.ArgumentTypeError(f"expected [ipv6]:port, got {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not host:
        raise argparse.ArgumentTypeError(f"expected host[:port], got {text!r}")
    port = port_value(port_text) if port_text else default_port
    return ServerAddress(host=host, port=port)


def listen_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to listen on; the host is required (nothing binds all)."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text or (":" in host and not text.startswith("[")):
        raise argparse.ArgumentTypeError(
            f"expected host:port or [ipv6]:port to listen on (e.g. 127.0.0.1:9108), got {text!r}"
        )
    return host, port_value(port_text)


LOG_LEVELS = ("debug", "info", "warning", "error")


def log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return level


def number_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(item) for item in csv_items(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers >= 0, got {text!r}")
    return values
