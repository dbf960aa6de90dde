"""The store's contract: what every backend promises its callers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Protocol

from promises.records import Promise, SearchPage, SearchState, Transition, Value


class PromiseStore(Protocol):
    """Durable promises: records with identity and state that outlive any process.

    Threads and loops: the plain methods block the calling thread (any thread; never
    call them on an event loop); the ``a``-prefixed ones and ``wait``/``wait_all`` are
    coroutines for asyncio that never block the loop.

    Atomicity: each create/resolve/reject/cancel is one database transaction. It
    either makes a *fresh* transition (``Transition.fresh``), or finds a permitted
    duplicate of an earlier call and changes nothing (``fresh`` false), or raises and
    changes nothing. A returned transition is durable (committed; on SQLite with the
    default ``synchronous=FULL``, fsynced). Concurrent calls may share one commit.

    Timeouts: a pending promise whose ``timeout_at`` has passed is settled —
    ``rejected_timedout``, or ``resolved`` for a timer (tag ``promises:timer``) — as of
    its timeout. The first read that sees this stores it, so every process, whatever
    its clock, reads one outcome; ``sweep`` stores it in bulk.

    Retention: ``collect`` deletes settled promises older than the retention age.
    Idempotence lasts only as long as the record: after collection a create with the
    old key makes a *new* promise, and a settle of the old id is *not found*.

    Errors: ``InvalidArgument`` for bad input (nothing is sent to the database),
    ``StoreUnavailable`` when the database cannot answer (nothing changed; retry).
    """

    def create(
        self,
        id: str,
        *,
        timeout_at: int,
        param: Value | None = None,
        tags: Mapping[str, str] | None = None,
        ikey: str | None = None,
        strict: bool = False,
    ) -> Transition: ...

    def resolve(
        self, id: str, *, value: Value | None = None, ikey: str | None = None, strict: bool = False
    ) -> Transition: ...

    def reject(
        self, id: str, *, value: Value | None = None, ikey: str | None = None, strict: bool = False
    ) -> Transition: ...

    def cancel(
        self, id: str, *, value: Value | None = None, ikey: str | None = None, strict: bool = False
    ) -> Transition: ...

    def get(self, id: str) -> Promise: ...

    def search(
        self,
        id: str = "*",
        *,
        state: SearchState | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SearchPage: ...

    def sweep(self, now: int | None = None) -> int: ...

    def collect(self, max_age: timedelta | None = None) -> int: ...

    async def aget(self, id: str) -> Promise: ...

    async def wait(self, id: str, *, timeout: float) -> Promise: ...

    async def wait_all(self, ids: Sequence[str], *, timeout: float) -> dict[str, Promise]: ...

    def close(self) -> None: ...
