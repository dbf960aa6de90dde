"""Calls from a thread into event loops, gathered: one wake-up of a loop for many calls.

The writer answers a whole batch at once: every unit's future, every waiter and worker
its commit wakes. Each ``loop.call_soon_threadsafe`` writes to the loop's self-pipe
and wakes it; for a batch of 50 jobs that was 50 or more wake-ups of the same loop.
Inside ``gathered()`` (on that thread), ``call_soon`` keeps the calls instead, and
hands each loop its calls at the end with one ``call_soon_threadsafe``, run in the
order they were made. Outside it, ``call_soon`` is ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

_here = threading.local()

Call = tuple[Callable[..., Any], tuple[Any, ...]]


def call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``loop.call_soon_threadsafe(fn, *args)``, gathered when inside ``gathered()``.
    A closed loop is skipped: nobody waits on it any more."""
    pending: dict[asyncio.AbstractEventLoop, list[Call]] | None = getattr(_here, "calls", None)
    if pending is None:
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(fn, *args)
    else:
        pending.setdefault(loop, []).append((fn, args))


@contextlib.contextmanager
def gathered() -> Iterator[None]:
    """Gather this thread's ``call_soon`` calls until the block ends (nestable: an
    inner block leaves them to the outer one)."""
    if getattr(_here, "calls", None) is not None:
        yield
        return
    _here.calls = {}
    try:
        yield
    finally:
        pending, _here.calls = _here.calls, None
        for loop, calls in pending.items():
            if len(calls) == 1:
                fn, args = calls[0]
                call_soon(loop, fn, *args)
            else:
                call_soon(loop, _run_all, loop, calls)


def _run_all(loop: asyncio.AbstractEventLoop, calls: list[Call]) -> None:
    """Run ``calls`` on ``loop``, each on its own: one that raises is reported the way
    the loop reports a failing callback, and the rest still run."""
    for fn, args in calls:
        try:
            fn(*args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            loop.call_exception_handler(
                {"message": f"Exception in callback {fn!r}", "exception": exc}
            )
