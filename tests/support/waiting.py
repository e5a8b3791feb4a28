"""Waiting on a condition with a deadline, instead of sleeping for a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 (the polling deadline, not a cancellation timeout)
    interval: float = 0.05,
    message: str = "condition",
) -> None:
    """Poll ``condition`` until it is true, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


async def cancel_and_raise(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks; one that had already ended with an error fails the test with it."""
    for task in tasks:
        task.cancel()
    # A worker that ended by itself before the cancellation is a failure of the pieces it ran: show it.
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, Exception):
            raise result
