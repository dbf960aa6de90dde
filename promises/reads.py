"""Reads by id asked for in one turn of an event loop, answered by one query.

When one commit settles many jobs, every waiter woken by it reads its promise again at
the same moment. Each read alone is a round trip to a reader thread and a query; the
reads asked for in the same turn of the loop share one (``WHERE id IN …``), up to a
cap, and each caller gets its own ids from the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

#: A shared read takes no more callers once it would ask for more ids than this (one
#: caller's own ids are never split).
MAX_IDS = 500


@dataclass(eq=False)
class _Batch(Generic[T]):
    loop: asyncio.AbstractEventLoop
    ids: dict[str, None]
    found: asyncio.Future[dict[str, T]]


class SharedReads(Generic[T]):
    """``await reads(ids)``: what ``read(ids)`` finds of ``ids``, read together with
    the other calls of this loop's turn."""

    def __init__(self, read: Callable[[list[str]], Awaitable[dict[str, T]]]) -> None:
        self._read = read
        self._batch: _Batch[T] | None = None

    async def __call__(self, ids: list[str]) -> dict[str, T]:
        loop = asyncio.get_running_loop()
        batch = self._batch
        if batch is None or batch.loop is not loop or len(batch.ids) + len(ids) > MAX_IDS:
            batch = self._batch = _Batch(loop, {}, loop.create_future())
            loop.call_soon(self._run, batch)
        batch.ids.update(dict.fromkeys(ids))
        found = await asyncio.shield(batch.found)  # a cancelled caller leaves the others be
        return {i: found[i] for i in ids if i in found}

    def _run(self, batch: _Batch[T]) -> None:
        if self._batch is batch:
            self._batch = None
        read = asyncio.ensure_future(self._read(list(batch.ids)))

        def answer(done: asyncio.Future[dict[str, T]]) -> None:
            if done.cancelled():
                batch.found.cancel()
            elif (error := done.exception()) is not None:
                batch.found.set_exception(error)
            else:
                batch.found.set_result(done.result())

        read.add_done_callback(answer)
        # Every caller may have been cancelled: nobody else would look at an error.
        batch.found.add_done_callback(lambda f: f.cancelled() or f.exception())
