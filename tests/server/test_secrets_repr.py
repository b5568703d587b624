"""Session keys stay out of ``repr()`` (and so out of log lines and tracebacks)."""

import base64
import logging
from pathlib import Path

import pytest

from fluxify.client.control import fetch_session
from fluxify.protocol.control import SessionRequest
from tests.server.control_harness import running_server


async def test_no_session_key_in_the_repr_of_a_session_or_a_response(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_server(tmp_path) as h:
        response = await fetch_session(h.address, h.client("alice"), SessionRequest("alice"))
        session = h.table.by_id(response.session_id)
        assert session is not None
        logging.getLogger("fluxify.test").info("granted %r for %r", response, session)
    key = response.session_key
    assert len(key) == 32 and session.key == key
    spellings = (repr(key), key.hex(), base64.b64encode(key).decode())
    for text in (repr(response), repr(session), str(response), caplog.text):
        assert not any(spelling in text for spelling in spellings)
    assert "session_id=" in repr(response) and "identity='alice'" in repr(session)
