"""Control-plane messages (SPEC §3, §5): one JSON request, one JSON response, v1-compatible.

The request is ``{"client_name": "..."}``; the response carries the session id, the base64 session
key, the UDP port and the client's inner addresses. Both may carry the optional ``"fluxify"``
extension object; a v1 peer ignores it, as it ignores every unknown field. Keys are matched
case-insensitively, as Go's ``encoding/json`` does. Decoding errors are
:class:`~fluxify.errors.RemoteProtocolError` with a sentence naming the faulty field.
"""

import base64
import binascii
import json
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address, IPv6Address
from typing import Any, TypeVar

from fluxify.errors import LocalProtocolError, RemoteProtocolError

SESSION_KEY_SIZE = 32
MAX_SESSION_ID = 0xFFFF_FFFF
MAX_CONTROL_MESSAGE_BYTES = 64 * 1024
EXTENSION_FIELD = "fluxify"
EXTENSION_VERSION = 2
# Extension features (SPEC §5). A feature is used only when both peers listed it.
# The bond engine's v2 header (per-path sequence number and send time in the reserved bytes),
# feedback packets, numbered control packets with their own replay window (docs/bond-engine.md).
FEATURE_BOND_V2 = "bond-v2"
# Per-direction keys with counter nonces, rotated over a persistent control channel that also
# carries goodbye and revocation (docs/keys.md, docs/protocol.md §3.4). Only with bond-v2.
FEATURE_REKEY = "rekey"
# The sender's TUN writes TCP packets whose checksum field holds the pseudo-header sum with the
# virtio-net NEEDS_CSUM flag, so either end may send its TCP segments that way (not summed);
# offered and accepted only by an end whose TUN has a vnet header (docs/protocol.md §5.1).
FEATURE_CSUM_PARTIAL = "csum-partial"

_Address = TypeVar("_Address", IPv4Address, IPv6Address)


@dataclass(frozen=True)
class Extensions:
    """The ``"fluxify"`` extension object: a protocol version and the features offered/accepted."""

    version: int = EXTENSION_VERSION
    features: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "features": sorted(self.features)}


@dataclass(frozen=True)
class SessionRequest:
    """What a client asks for. An empty name lets the server use the certificate CN."""

    client_name: str = ""
    extensions: Extensions | None = None


@dataclass(frozen=True)
class SessionResponse:
    """What the server hands out: session id (never 0), 32-byte key, UDP port, inner addresses."""

    session_id: int
    session_key: bytes = field(repr=False)  # a secret: never in a log line or a traceback
    udp_port: int
    client_ip: IPv4Address
    client_ip6: IPv6Address | None
    extensions: Extensions | None = None


def encode_request(request: SessionRequest) -> bytes:
    """Compact JSON, no newline, as the Go client writes it."""
    body: dict[str, Any] = {"client_name": request.client_name}
    if request.extensions is not None:
        body[EXTENSION_FIELD] = request.extensions.to_json()
    return _dump(body)


def decode_request(data: bytes) -> SessionRequest:
    obj = _load_object(data, "session request")
    name = obj.get("client_name", "")
    if not isinstance(name, str):
        raise RemoteProtocolError(
            f'session request: "client_name" must be a string, got {_kind(name)}'
        )
    return SessionRequest(client_name=name, extensions=_decode_extensions(obj))


def encode_response(response: SessionResponse) -> bytes:
    """Compact JSON in the Go field order; the key is padded standard base64 (44 characters)."""
    if not 0 < response.session_id <= MAX_SESSION_ID:
        raise LocalProtocolError(
            f"session id {response.session_id} is not a non-zero 32-bit unsigned integer"
        )
    if len(response.session_key) != SESSION_KEY_SIZE:
        raise LocalProtocolError(
            f"session key is {len(response.session_key)} bytes, expected {SESSION_KEY_SIZE}"
        )
    body: dict[str, Any] = {
        "session_id": response.session_id,
        "session_key": base64.b64encode(response.session_key).decode("ascii"),
        "udp_port": response.udp_port,
        "client_ip": str(response.client_ip),
    }
    if response.client_ip6 is not None:
        body["client_ip6"] = str(response.client_ip6)
    if response.extensions is not None:
        body[EXTENSION_FIELD] = response.extensions.to_json()
    return _dump(body)


def decode_response(data: bytes) -> SessionResponse:
    obj = _load_object(data, "session response")
    session_id = _require_int(obj, "session_id", 1, MAX_SESSION_ID)
    udp_port = _require_int(obj, "udp_port", 1, 65535)
    key_text = obj.get("session_key")
    if not isinstance(key_text, str):
        raise RemoteProtocolError(
            'session response: "session_key" is missing or not a string; '
            "the server must send 32 random bytes in base64"
        )
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError(
            f'session response: "session_key" is not valid base64 ({exc})'
        ) from exc
    if len(key) != SESSION_KEY_SIZE:
        raise RemoteProtocolError(
            f'session response: "session_key" decodes to {len(key)} bytes, '
            f"expected {SESSION_KEY_SIZE}"
        )
    client_ip = _require_address(obj, "client_ip", IPv4Address)
    client_ip6 = _require_address(obj, "client_ip6", IPv6Address) if obj.get("client_ip6") else None
    return SessionResponse(
        session_id=session_id,
        session_key=key,
        udp_port=udp_port,
        client_ip=client_ip,
        client_ip6=client_ip6,
        extensions=_decode_extensions(obj),
    )


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_CONTROL_MESSAGE_BYTES:
        raise RemoteProtocolError(
            f"{what} is {len(data)} bytes, more than the {MAX_CONTROL_MESSAGE_BYTES}-byte limit"
        )
    if not data.strip():
        raise RemoteProtocolError(f"{what} is empty; expected a JSON object")
    try:
        obj = json.loads(data.decode("utf-8"))
    except RecursionError as exc:  # nesting deeper than the interpreter's stack allows
        raise RemoteProtocolError(f"{what} is nested too deeply to be a control message") from exc
    except ValueError as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; so is a number longer than
        # int()'s 4 300-digit limit (CVE-2020-10735).
        raise RemoteProtocolError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"{what} must be a JSON object, got {_kind(obj)}")
    # Go's encoding/json matches keys case-insensitively; the first spelling wins here.
    folded: dict[str, Any] = {}
    for key, value in obj.items():
        folded.setdefault(key.lower(), value)
    return folded


def _require_int(obj: dict[str, Any], name: str, low: int, high: int) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RemoteProtocolError(
            f'session response: "{name}" must be an integer in {low}..{high}, got {value!r}'
        )
    return value


def _require_address(obj: dict[str, Any], name: str, kind: type[_Address]) -> _Address:
    value = obj.get(name)
    if not isinstance(value, str):
        raise RemoteProtocolError(f'session response: "{name}" is missing or not a string')
    try:
        return kind(value)
    except AddressValueError as exc:
        raise RemoteProtocolError(
            f'session response: "{name}" is not an IP address: {value!r}'
        ) from exc


def _decode_extensions(obj: dict[str, Any]) -> Extensions | None:
    ext = obj.get(EXTENSION_FIELD)
    if ext is None:
        return None
    if not isinstance(ext, dict):
        raise RemoteProtocolError(f'"{EXTENSION_FIELD}" must be an object, got {_kind(ext)}')
    version = ext.get("version")
    features = ext.get("features", [])
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RemoteProtocolError(
            f'"{EXTENSION_FIELD}.version" must be a positive integer, got {version!r}'
        )
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise RemoteProtocolError(f'"{EXTENSION_FIELD}.features" must be a list of strings')
    return Extensions(version=version, features=frozenset(features))


def _kind(value: object) -> str:
    return type(value).__name__
