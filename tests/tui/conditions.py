"""Waiting in pilot tests for what the user would see, never for a fixed time.

The apps refresh their stats once a second; a fixed pause of 1.2 s races that timer on a busy
machine. ``until`` lets the app run in short pauses until the condition holds, with a deadline
long enough that only a real failure reaches it.
"""

import time
from collections.abc import Callable

from textual.pilot import Pilot

DEADLINE_S = 20.0


async def until(pilot: Pilot[int], what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE_S:g} s waiting for {what}")
        await pilot.pause(0.05)
