"""Control-plane fuzzing: generated inputs through decode_request, decode_response and the
request handler (``ControlServer.grant`` and ``encode_response``); optionally over real TLS.

Every input must end as a decoded message or a typed refusal (``RemoteProtocolError``,
``SessionRefusedError``); anything else is a crash. Run the full command with
``bash scripts/fuzz-control`` (10^5 inputs by default); the test suite runs a short one.
"""

import argparse
import asyncio
import base64
import json
import logging
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxify.errors import RemoteProtocolError, SessionRefusedError
from fluxify.protocol.control import (
    EXTENSION_FIELD,
    FEATURE_BOND_V2,
    MAX_CONTROL_MESSAGE_BYTES,
    SessionRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from fluxify.server.control import ControlServer
from fluxify.server.sessions import SessionTable

IDENTITY = "alice"
FEATURES = (FEATURE_BOND_V2, "a-feature-nobody-knows", "another")
_VALID_KEY = base64.b64encode(bytes(range(32))).decode()


@dataclass
class FuzzReport:
    """Outcome counts per stage; ``crashes`` holds (input, traceback) of the first few."""

    counts: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[bytes, str]] = field(default_factory=list)
    crash_count: int = 0

    def crash(self, data: bytes) -> None:
        self.crash_count += 1
        if len(self.crashes) < 5:
            self.crashes.append((data, traceback.format_exc()))

    def lines(self) -> list[str]:
        return [f"  {name:<42} {n:>9}" for name, n in sorted(self.counts.items())]


# --- generation --------------------------------------------------------------------------------


def _text(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(["alice", "", "ALICE", "alice ", "bob", "ålice", "\u0000", "\ud800"])
    if pick < 0.5:
        return "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(0, 40)))
    if pick < 0.6:
        return "x" * rng.choice([63, 64, 65, 1000, 60_000])
    return "".join(chr(rng.randrange(0, 0x10FFFF)) for _ in range(rng.randrange(0, 10)))


def _number(rng: random.Random) -> Any:
    return rng.choice(
        [
            0,
            -1,
            1,
            2,
            65535,
            65536,
            0xFFFF_FFFF,
            0x1_0000_0000,
            2**63,
            -(2**63),
            1.5,
            -0.0,
            1e308,
            float("inf"),
            float("nan"),
            True,
            False,
            rng.randrange(-(10**20), 10**20),
        ]
    )


def _value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(8 if depth < 5 else 5)
    if pick == 0:
        return None
    if pick == 1:
        return _number(rng)
    if pick in (2, 3):
        return _text(rng)
    if pick == 4:
        return rng.choice([True, False])
    if pick == 5:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["client_name", "CLIENT_NAME", EXTENSION_FIELD, "version", "features", "session_id"]
    return {
        rng.choice([*keys, _text(rng)]): _value(rng, depth + 1) for _ in range(rng.randrange(5))
    }


def _request_like(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if rng.random() < 0.8:
        key = rng.choice(["client_name", "Client_Name", "CLIENT_NAME", "client_name "])
        body[key] = _text(rng) if rng.random() < 0.8 else _value(rng)
    if rng.random() < 0.6:
        ext: Any = {
            "version": rng.choice([1, 2, 3, 0, -1, "2", True, 2**70, None, 2.0]),
            "features": rng.choice(
                [
                    list(rng.sample(FEATURES, rng.randrange(4))),
                    [_text(rng) for _ in range(rng.randrange(5))],
                    [1, 2],
                    FEATURES[0],
                    None,
                    [FEATURE_BOND_V2] * 1000,
                ]
            ),
        }
        if rng.random() < 0.1:
            ext = _value(rng)
        body[rng.choice([EXTENSION_FIELD, "FLUXIFY", "Fluxify"])] = ext
    if rng.random() < 0.2:
        body[_text(rng)] = _value(rng)
    return body


def _response_like(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {
        "session_id": rng.choice([1, 0xFFFF_FFFF, 7, 42, _number(rng)]),
        "session_key": rng.choice(
            [
                _VALID_KEY,
                _VALID_KEY,
                _VALID_KEY,
                _VALID_KEY[:-4],
                _VALID_KEY + "====",
                base64.b64encode(bytes(31)).decode(),
                "not base64!",
                _text(rng),
            ]
        ),
        "udp_port": rng.choice([8000, 8000, 1, 65535, _number(rng)]),
        "client_ip": rng.choice(["10.8.0.2", "10.8.0.2", "10.8.0.256", "::1", _text(rng)]),
    }
    if rng.random() < 0.5:
        body["client_ip6"] = rng.choice(["fd00:8::2", "fd00:8::2", "10.8.0.2", "fd::8::2", ""])
    for name in list(body):
        if rng.random() < 0.05:
            del body[name]
    if rng.random() < 0.3:
        body[EXTENSION_FIELD] = _request_like(rng).get(EXTENSION_FIELD, _value(rng))
    return body


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(4)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1:
            buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
        elif op == 2 and buf:
            del buf[rng.randrange(len(buf))]
        else:
            buf = buf[: rng.randrange(len(buf) + 1)]
    return bytes(buf)


def _dump(rng: random.Random, obj: Any) -> bytes:
    text = json.dumps(obj, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    if rng.random() < 0.1:
        text = rng.choice([" ", "\n", "\ufeff", "\t"]) + text + rng.choice(["", " ", "\n", "x"])
    return text.encode("utf-8", errors="surrogatepass")


_GENERATORS: list[tuple[str, Callable[[random.Random], bytes]]] = [
    ("random bytes", lambda r: r.randbytes(r.randrange(0, 300))),
    ("request", lambda r: _dump(r, _request_like(r))),
    ("response", lambda r: _dump(r, _response_like(r))),
    ("json value", lambda r: _dump(r, _value(r))),
    ("mutated request", lambda r: _mutate(r, _dump(r, _request_like(r)))),
    ("mutated response", lambda r: _mutate(r, _dump(r, _response_like(r)))),
    (
        "deep nesting",
        lambda r: r.choice([b"[", b'{"a":', b'{"fluxify":']) * r.randrange(100, 30_000),
    ),
    (
        "huge number",
        lambda r: (
            b'{"client_name":"alice","fluxify":{"version":' + b"9" * r.randrange(4000, 6000) + b"}}"
        ),
    ),
    ("oversize", lambda r: b'{"client_name":"' + b"a" * (MAX_CONTROL_MESSAGE_BYTES + 1) + b'"}'),
]
_WEIGHTS = [12, 20, 16, 12, 16, 14, 4, 4, 2]


def generate(rng: random.Random) -> tuple[str, bytes]:
    """One input and the name of the generator that made it."""
    (name, make) = rng.choices(_GENERATORS, _WEIGHTS)[0]
    return name, make(rng)


# --- running -----------------------------------------------------------------------------------


def new_handler() -> ControlServer:
    """The request handler as the server builds it (no sockets: ``grant`` only)."""
    return ControlServer(
        _NO_CONTEXT, SessionTable(), 8000, accepted_features=frozenset(FEATURES), clock=lambda: 0.0
    )


_NO_CONTEXT: Any = None  # grant() never touches TLS


def check_one(data: bytes, handler: ControlServer, report: FuzzReport) -> None:
    """Decode ``data`` both ways and hand a decoded request to the handler; count outcomes."""
    try:
        request = decode_request(data)
    except RemoteProtocolError:
        report.counts["request: refused (RemoteProtocolError)"] += 1
        request = None
    except Exception:
        report.crash(data)
        request = None
    if request is not None:
        report.counts["request: decoded"] += 1
        try:
            assert decode_request(encode_request(request)) == request
            response = handler.grant(IDENTITY, request, serial=1)
            assert decode_response(encode_response(response)) == response
            report.counts["handler: session granted"] += 1
        except SessionRefusedError:
            report.counts["handler: refused (SessionRefusedError)"] += 1
        except Exception:
            report.crash(data)
    try:
        response = decode_response(data)
        assert decode_response(encode_response(response)) == response
        report.counts["response: decoded"] += 1
    except RemoteProtocolError:
        report.counts["response: refused (RemoteProtocolError)"] += 1
    except Exception:
        report.crash(data)


def fuzz(count: int, seed: int) -> FuzzReport:
    rng = random.Random(seed)
    handler = new_handler()
    report = FuzzReport()
    for _ in range(count):
        name, data = generate(rng)
        report.counts[f"input: {name}"] += 1
        check_one(data, handler, report)
    return report


async def fuzz_over_tls(count: int, seed: int, root: Path) -> FuzzReport:
    """``count`` inputs as request bodies to a real control server; it must answer or refuse."""
    rng = random.Random(seed)
    report = FuzzReport()
    errors = _ErrorRecords()
    server_log = logging.getLogger("fluxify.server")
    server_log.addHandler(errors)
    propagate, server_log.propagate = server_log.propagate, False  # refusals: one line each
    try:
        await _send_all(count, rng, root, report)
    finally:
        server_log.removeHandler(errors)
        server_log.propagate = propagate
    for record in errors.records:  # "unexpected error" tracebacks are crashes too
        report.crash_count += 1
        report.crashes.append((b"", record.getMessage()))
    return report


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _send_all(count: int, rng: random.Random, root: Path, report: FuzzReport) -> None:
    from fluxify.client.control import fetch_session  # noqa: PLC0415
    from fluxify.pki.tls import client_context  # noqa: PLC0415
    from tests.server.control_harness import raw_client_fin, running_server  # noqa: PLC0415

    async with running_server(root, accepted_features=frozenset(FEATURES)) as h:
        context = client_context(h.client(IDENTITY))
        for _ in range(count):
            name, data = generate(rng)
            report.counts[f"tls input: {name}"] += 1
            try:
                answer = await asyncio.to_thread(raw_client_fin, h.server.port, context, data)
            except Exception:
                report.crash(data)
                continue
            if answer:
                decode_response(answer)  # a granted session must decode
                report.counts["tls: session granted"] += 1
            else:
                report.counts["tls: closed without a session"] += 1
        # and the server still serves a well-formed client afterwards
        await fetch_session(h.address, h.client(IDENTITY), SessionRequest(IDENTITY))
        report.counts["tls: served afterwards"] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="in-process inputs")
    parser.add_argument("--tls", type=int, default=300, help="inputs sent over real TLS")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    started = time.monotonic()
    report = fuzz(args.count, seed)
    elapsed = time.monotonic() - started
    print(f"control-plane fuzz, seed {seed}: {args.count} inputs in {elapsed:.1f} s")
    print("\n".join(report.lines()))
    crashes = report.crash_count
    if args.tls:
        with tempfile.TemporaryDirectory(prefix="fluxify-fuzz-") as root:
            tls = asyncio.run(fuzz_over_tls(args.tls, seed, Path(root)))
        print(f"over TLS: {args.tls} inputs")
        print("\n".join(tls.lines()))
        crashes += tls.crash_count
        report.crashes += tls.crashes
    for data, trace in report.crashes:
        print(f"CRASH on {data[:200]!r}:\n{trace}", file=sys.stderr)
    print(f"crashes: {crashes}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
