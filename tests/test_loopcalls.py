"""Calls from threads into event loops: gathered per commit, in order, each on its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from promises import open_store
from promises.loopcalls import call_soon, gathered

pytestmark = pytest.mark.anyio


class CountingLoop:
    """Counts a running loop's thread-safe wake-ups (its self-pipe writes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.wakes = loop, 0
        self._real = loop.call_soon_threadsafe

    def __enter__(self) -> CountingLoop:
        def counted(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
            self.wakes += 1
            return self._real(fn, *args, **kw)

        self.loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.loop.call_soon_threadsafe  # the class's method again


def in_thread(fn: Callable[[], None]) -> None:
    thread = threading.Thread(target=fn)
    thread.start()
    thread.join()


async def test_gathered_calls_reach_a_loop_at_once_in_order() -> None:
    loop = asyncio.get_running_loop()
    seen: list[int] = []
    all_ran = asyncio.Event()

    def calls() -> None:
        with gathered():
            for n in range(5):
                call_soon(loop, seen.append, n)
            with gathered():  # nested: left to the outer block
                call_soon(loop, seen.append, 5)
            call_soon(loop, all_ran.set)
            assert seen == []  # nothing reaches the loop before the block ends

    with CountingLoop(loop) as counting:
        in_thread(calls)
        await asyncio.wait_for(all_ran.wait(), 10)
    assert seen == [0, 1, 2, 3, 4, 5]
    assert counting.wakes == 1


async def test_a_failing_call_is_reported_and_the_rest_still_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    seen: list[str] = []
    all_ran = asyncio.Event()

    def boom() -> None:
        raise ValueError("boom")

    def calls() -> None:
        with gathered():
            call_soon(loop, seen.append, "before")
            call_soon(loop, boom)
            call_soon(loop, seen.append, "after")
            call_soon(loop, all_ran.set)

    try:
        in_thread(calls)
        await asyncio.wait_for(all_ran.wait(), 10)
    finally:
        loop.set_exception_handler(None)
    assert seen == ["before", "after"]
    assert [type(c["exception"]) for c in reported] == [ValueError]


async def test_a_closed_loop_is_skipped() -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    call_soon(closed, print, "never")  # no error: nobody waits on that loop
    with gathered():
        call_soon(closed, print, "never")
        call_soon(closed, print, "never")


async def test_one_commit_of_many_writes_wakes_their_loop_once(tmp_path: Path) -> None:
    """Writes waiting together are committed together (group commit) and answered with
    one wake-up of the loop that waits on them, not one per write."""
    with open_store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        db = store.db
        await db.awrite(lambda tx: None)  # the writer is running
        hold, held = threading.Event(), threading.Event()

        def blocking(tx: Any) -> None:  # keeps the writer busy while the others queue
            held.set()
            hold.wait(10)

        loop = asyncio.get_running_loop()
        with CountingLoop(loop) as counting:
            first = asyncio.ensure_future(db.awrite(blocking))
            await asyncio.to_thread(held.wait, 10)
            before = counting.wakes
            writes = [asyncio.ensure_future(db.awrite(lambda tx, n=n: n)) for n in range(20)]
            await asyncio.sleep(0)  # they are queued behind the first batch
            hold.set()
            assert await asyncio.wait_for(asyncio.gather(*writes), 10) == list(range(20))
            await first
            # Counted from when the first write held the writer: its answer is one
            # wake-up, and the batch of the 20 writes queued behind it is one more.
            assert counting.wakes - before <= 2
