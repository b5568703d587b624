"""Control-plane JSON (SPEC §3, §5): exact v1 shapes, extensions, and typed decoding errors."""

import base64
import json
from ipaddress import IPv4Address, IPv6Address

import pytest

from fluxify.errors import LocalProtocolError, RemoteProtocolError
from fluxify.protocol.control import (
    MAX_CONTROL_MESSAGE_BYTES,
    Extensions,
    SessionRequest,
    SessionResponse,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

KEY = bytes(range(32))
RESPONSE = SessionResponse(
    session_id=1780804892,
    session_key=KEY,
    udp_port=8000,
    client_ip=IPv4Address("10.8.0.2"),
    client_ip6=IPv6Address("fd00:8::2"),
)


def test_request_is_compact_json_as_the_go_client_writes_it() -> None:
    assert encode_request(SessionRequest("alice")) == b'{"client_name":"alice"}'


def test_response_is_compact_json_in_go_field_order() -> None:
    key_b64 = base64.b64encode(KEY).decode()
    assert len(key_b64) == 44 and key_b64.endswith("=")
    assert (
        encode_response(RESPONSE)
        == (
            '{"session_id":1780804892,"session_key":"' + key_b64 + '","udp_port":8000,'
            '"client_ip":"10.8.0.2","client_ip6":"fd00:8::2"}'
        ).encode()
    )


def test_round_trips_with_and_without_extensions() -> None:
    ext = Extensions(version=2, features=frozenset({"replay-window", "counter-nonces"}))
    for request in (SessionRequest(""), SessionRequest("bob", ext)):
        assert decode_request(encode_request(request)) == request
    with_ext = SessionResponse(**{**RESPONSE.__dict__, "extensions": ext})
    for response in (RESPONSE, with_ext):
        assert decode_response(encode_response(response)) == response


def test_v1_peers_unknown_fields_and_key_case_are_tolerated() -> None:
    body = b' {"Client_Name": "carol", "something_new": [1, 2]} '
    assert decode_request(body) == SessionRequest("carol")
    assert decode_request(b"{}") == SessionRequest("")


def test_go_response_without_v6_decodes() -> None:
    body = json.loads(encode_response(RESPONSE))
    del body["client_ip6"]
    assert decode_response(json.dumps(body).encode()).client_ip6 is None


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"", "empty"),
        (b"not json", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"client_name": 5}', "client_name"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"client_name": "x", "fluxify": {"version": "2"}}', "fluxify.version"),
        (b'{"client_name": "x", "fluxify": {"version": 2, "features": [1]}}', "features"),
        (b" " * (MAX_CONTROL_MESSAGE_BYTES + 1), "limit"),
    ],
)
def test_bad_requests_raise_a_typed_error_naming_the_problem(body: bytes, complaint: str) -> None:
    with pytest.raises(RemoteProtocolError, match=complaint):
        decode_request(body)


def _response_with(**changes: object) -> bytes:
    body = json.loads(encode_response(RESPONSE))
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (_response_with(session_id=0), "session_id"),
        (_response_with(session_id=2**32), "session_id"),
        (_response_with(session_id=True), "session_id"),
        (_response_with(session_key="AAAA"), "3 bytes"),
        (_response_with(session_key="%%%"), "base64"),
        (_response_with(session_key=None), "session_key"),
        (_response_with(udp_port=0), "udp_port"),
        (_response_with(client_ip="10.8.0"), "client_ip"),
        (_response_with(client_ip6="fd00::zz"), "client_ip6"),
    ],
)
def test_bad_responses_raise_a_typed_error_naming_the_field(body: bytes, complaint: str) -> None:
    with pytest.raises(RemoteProtocolError, match=complaint):
        decode_response(body)


def test_we_refuse_to_encode_an_invalid_response() -> None:
    with pytest.raises(LocalProtocolError, match="session id 0"):
        encode_response(SessionResponse(**{**RESPONSE.__dict__, "session_id": 0}))
    with pytest.raises(LocalProtocolError, match="31 bytes"):
        encode_response(SessionResponse(**{**RESPONSE.__dict__, "session_key": KEY[:31]}))
