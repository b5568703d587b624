"""How the programs run their asyncio loop: the standard library's, or uvloop when
``FLUXIFY_EVENT_LOOP=uvloop`` (a debugging switch; no measured gain so far)."""

import asyncio
import os
from collections.abc import Coroutine
from typing import Any

EVENT_LOOP_ENV = "FLUXIFY_EVENT_LOOP"


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion on the loop ``EVENT_LOOP_ENV`` asks for."""
    if os.environ.get(EVENT_LOOP_ENV) == "uvloop":
        import uvloop  # noqa: PLC0415 - only when asked for

        uvloop.install()
    asyncio.run(main)
