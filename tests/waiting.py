"""Waiting in tests: for a condition, with a deadline — never a fixed sleep.

Every test that waits for something another task, thread or process brings about goes
through these, so no test depends on how fast the machine is: a fast machine meets the
condition early, a loaded one later, and only a real failure reaches the deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
#: Deadlines are generous: a loaded CI machine may be many times slower than a laptop.
DEFAULT_TIMEOUT = 30.0


def until(
    predicate: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, what: str | None = None
) -> T:
    """Call ``predicate`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not met within {timeout} s: {what or _describe(predicate)}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = DEFAULT_TIMEOUT,
    what: str | None = None,
) -> T:
    """``until`` for async tests. A plain predicate runs in a thread, so one that reads
    the store never blocks the event loop."""
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        if inspect.iscoroutinefunction(predicate):
            value = await predicate()
        else:
            value = await asyncio.to_thread(predicate)
            if inspect.isawaitable(value):
                value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise TimeoutError(f"not met within {timeout} s: {what or _describe(predicate)}")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


def _describe(predicate: Callable[..., object]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)
