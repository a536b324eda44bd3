"""Wait for a condition, with a deadline, instead of sleeping and then asserting: a busy CI machine makes any
fixed pause too short. The deadlines are generous on purpose: they only stop a test that would hang, and a
healthy run never comes near them. How fast things happen is measured in bench/, not asserted here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

DEADLINE = 60.0  # seconds


async def wait_until(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Return once ``condition()`` is true; fail the test if it is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


def wait_until_sync(condition: Callable[[], object], what: str, timeout: float = DEADLINE,
                    poll: float = 0.05) -> None:
    """`wait_until` outside an event loop (threads, subprocesses)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)
