"""The durable promise store on SQLite or PostgreSQL: ``open_store(url)``.

Atomicity comes from the database. A fresh create is one ``INSERT … ON CONFLICT DO
NOTHING``; a fresh settle is one ``UPDATE … WHERE state = 'pending' AND timeout_at >
now``. Only when those touch nothing does the store read the row — under the write
lock (``BEGIN IMMEDIATE`` on SQLite, ``SELECT … FOR UPDATE`` on PostgreSQL) — and
apply the rules in ``transitions.py`` to tell a permitted duplicate from a refusal.

Every write goes through ``promises.database`` (one writer per store, group commit);
every read through its readers. The ``*_tx`` methods are the units the runtime
combines with its own rows in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Literal

from sqlalchemy.exc import SQLAlchemyError

from promises import search as _search
from promises import upkeep as _upkeep
from promises.backends import DRIVER_ERRORS, Backend, open_backend, translate
from promises.bell import Bell
from promises.changes import change_feed
from promises.database import Database, Tx
from promises.errors import (
    InvalidArgument,
    InvariantViolation,
    PromiseError,
    PromiseNotFound,
    StoreMisconfigured,
    StoreUnavailable,
)
from promises.migrate import migrate
from promises.reads import SharedReads
from promises.records import (
    TIMER_TAG,
    Promise,
    SearchPage,
    SearchState,
    Transition,
    Value,
    effective,
)
from promises.rows import promise_from_row
from promises.transitions import (
    SETTLED_BY,
    SettleAction,
    check_duplicate_create,
    check_duplicate_settle,
)
from promises.validation import (
    Limits,
    check_id,
    check_ikey,
    check_seconds,
    check_strict,
    check_tags,
    check_timestamp,
    check_value,
    dumps_mapping,
)
from promises.waiting import Listener, Waiters

log = logging.getLogger("promises.store")

DEFAULT_LIMITS = Limits()
_NO_TAGS: Mapping[str, str] = MappingProxyType({})

#: Milliseconds since the epoch. Inject another to simulate time.
Clock = Callable[[], int]


def system_clock() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class NewPromise:
    """A create, checked: what ``create_tx`` writes."""

    id: str
    timeout_at: int
    param: Value
    tags: Mapping[str, str]
    ikey: str | None
    strict: bool


class SqlStore:
    """``PromiseStore`` on SQLite or PostgreSQL. Open it with ``open_store``."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock = system_clock,
        limits: Limits = DEFAULT_LIMITS,
        poll_interval: float = 1.0,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self.backend = backend
        self.db = Database(backend)
        self.sql = self.db.sql
        self.clock = clock
        self.limits = limits
        #: The slowest a waiter notices a settle if every notification were lost.
        self.poll_interval = poll_interval
        self.retention = retention
        #: SQLite: how this process tells the others on the file what it committed.
        self.bell = Bell(backend.path) if backend.path is not None else None
        self.waiters = Waiters(
            lambda: change_feed(backend, self.waiters.external, self.bell, self.db.writer_pids),
            self._settled_among,
        )
        self.db.on_commit = self._committed
        #: Told of every settle this process commits (see ``on_settled``).
        self._settle_listeners: list[Callable[[Promise], None]] = []
        #: The promise reads asked for in this turn of the event loop (see ``aget_many``).
        self._read_together: SharedReads[Promise] = SharedReads(
            lambda ids: self.db.aread(lambda tx: self._get_many_tx(tx, ids))
        )

    def on_settled(self, listener: Callable[[Promise], None]) -> None:
        """Call ``listener(promise)`` for each promise a commit of this process settles
        (resolved, rejected, cancelled, or its timeout stored) — once per settle across
        all processes, since each settle is committed once. Called on the writer's
        thread: it must return quickly and not write through the store."""
        self._settle_listeners.append(listener)

    def _committed(
        self, settled: dict[str, Promise | None], kinds: set[str] | None, later: dict[str, int]
    ) -> None:
        """After each commit (on the writer's thread): wake this process's waiters and
        workers, and ring the other processes on a SQLite file (they are not told when
        a task made ready later is due: their workers look)."""
        self.waiters.committed(settled, kinds, later)
        if self.bell is not None:
            self.bell.ring(settled, kinds if kinds is None or not later else kinds | set(later))
        for listener in self._settle_listeners:
            for promise in settled.values():
                if promise is not None and not promise.pending:
                    listener(promise)

    # -- checks (on the caller's thread, before anything reaches the database) -------

    def check_create(
        self,
        id: str,
        *,
        timeout_at: int,
        param: Value | None = None,
        tags: Mapping[str, str] | None = None,
        ikey: str | None = None,
        strict: bool = False,
    ) -> NewPromise:
        return NewPromise(
            check_id(id),
            check_timestamp(timeout_at, "timeout_at"),
            check_value(param, "param", self.limits),
            check_tags(tags, creating=True),
            check_ikey(ikey),
            check_strict(strict),
        )

    # -- units: run inside a write transaction --------------------------------------

    def create_tx(self, tx: Tx, new: NewPromise) -> Transition:
        """Create inside the caller's transaction. A refusal raises, which rolls back
        the caller's whole unit."""
        now = self.clock()
        row = {
            "id": new.id,
            "state": "pending",
            "timer": new.tags.get(TIMER_TAG) == "true",
            "param_headers": dumps_mapping(new.param.headers),
            "param_data": new.param.data,
            "value_headers": None,
            "value_data": None,
            "timeout_at": new.timeout_at,
            "tags": dumps_mapping(new.tags),
            "ikey_create": new.ikey,
            "ikey_settle": None,
            "created_at": now,
            "settled_at": None,
        }
        # On PostgreSQL (READ COMMITTED) a row deleted by retention between our insert
        # and our read makes us insert again; under SQLite's write lock it cannot happen.
        for _ in range(3):
            seq = tx.scalar(self.sql.insert_promise, row)
            if seq is not None:
                if new.tags:
                    tx.executemany(
                        self.sql.insert_tag,
                        [
                            {"seq": seq, "key": k, "value": v, "pending": 1}
                            for k, v in new.tags.items()
                        ],
                    )
                fresh = self.created(new, now)
                return Transition(self._apply_timeout_tx(tx, fresh, now), fresh=True)
            existing = tx.one(self.sql.get_for_update, {"id": new.id})
            if existing is not None:
                current = self._apply_timeout_tx(tx, promise_from_row(existing), now)
                check_duplicate_create(current, new.ikey, new.strict)
                return Transition(current, fresh=False)
        raise StoreUnavailable(f"promise {new.id!r} kept changing while being created; try again")

    def record_tx(
        self,
        tx: Tx,
        id: str,
        action: Literal["resolve", "reject"],
        param: Value,
        value: Value,
        *,
        timeout_at: int,
    ) -> Promise:
        """Create ``id`` already settled, in one statement: a create and a settle with
        the id as both keys (how the runtime records a finished step). If it exists, a
        pending one is settled now and a settled one is returned as it is: the first
        outcome stands."""
        now = self.clock()
        row = {
            "id": id, "state": SETTLED_BY[action], "timer": False,
            "param_headers": dumps_mapping(param.headers), "param_data": param.data,
            "value_headers": dumps_mapping(value.headers), "value_data": value.data,
            "timeout_at": timeout_at, "tags": None, "ikey_create": id, "ikey_settle": id,
            "created_at": now, "settled_at": now,
        }  # fmt: skip
        if tx.scalar(self.sql.insert_promise, row) is not None:
            recorded = Promise(
                id=id, state=SETTLED_BY[action], param=param, value=value, timeout_at=timeout_at,
                tags=_NO_TAGS, ikey_create=id, ikey_settle=id, created_at=now, settled_at=now,
            )  # fmt: skip
            tx.settled[id] = recorded
            return recorded
        existing = tx.one(self.sql.get_for_update, {"id": id})
        if existing is None:
            raise StoreUnavailable(f"promise {id!r} kept changing while being recorded; try again")
        current = self._apply_timeout_tx(tx, promise_from_row(existing), now)
        if not current.pending:
            return current
        return self.settle_tx(tx, id, action, value=value, ikey=id).promise

    @staticmethod
    def created(new: NewPromise, now: int) -> Promise:
        """The promise a fresh create of ``new`` at ``now`` wrote."""
        return Promise(
            id=new.id, state="pending", param=new.param, value=Value(),
            timeout_at=new.timeout_at, tags=new.tags, ikey_create=new.ikey,
            ikey_settle=None, created_at=now, settled_at=None,
        )  # fmt: skip

    def settle_tx(
        self,
        tx: Tx,
        id: str,
        action: SettleAction,
        *,
        value: Value | None = None,
        ikey: str | None = None,
        strict: bool = False,
    ) -> Transition:
        """Resolve, reject or cancel inside the caller's transaction (arguments as
        checked by ``check_settle``)."""
        now = self.clock()
        value = value or Value()
        params = {
            "id": id,
            "now": now,
            "state": SETTLED_BY[action],
            "headers": dumps_mapping(value.headers),
            "data": value.data,
            "ikey": ikey,
        }
        row = tx.one(self.sql.settle, params)
        if row is None:
            existing = tx.one(self.sql.get_for_update, {"id": id})
            if existing is None:
                raise PromiseNotFound(id)
            current = self._apply_timeout_tx(tx, promise_from_row(existing), now)
            if not current.pending:
                check_duplicate_settle(current, action, ikey, strict)
                return Transition(current, fresh=False)
            # Created by another transaction between our two statements; we hold its
            # row lock now, so this settle is the fresh one.
            row = tx.one(self.sql.settle, params)
            if row is None:
                raise InvariantViolation(f"pending promise {id!r} could not be settled")
        settled = promise_from_row(row)
        if settled.state != SETTLED_BY[action] or settled.value.data != value.data:
            raise InvariantViolation(
                f"promise {id!r} was written as {settled.state}, "
                f"but the store was asked to {action} it"
            )
        tx.settled[id] = settled
        self._note_waiters_tx(tx, [id])
        return Transition(settled, fresh=True)

    def _note_waiters_tx(self, tx: Tx, ids: list[str]) -> None:
        """Tell this process's workers to look for work if a task waited on one of
        ``ids`` (the database has just made it ready)."""
        for (kind,) in tx.all(self.sql.waited_on, {"ids": self.sql.ids(ids)}):
            tx.ready(kind)

    def check_settle(
        self, id: str, value: Value | None, ikey: str | None, strict: bool
    ) -> tuple[str, Value, str | None, bool]:
        return (
            check_id(id),
            check_value(value, "value", self.limits),
            check_ikey(ikey),
            check_strict(strict),
        )

    def _apply_timeout_tx(self, tx: Tx, current: Promise, now: int) -> Promise:
        """Store the timeout of an expired pending promise (we hold its row)."""
        if effective(current, now) is current:
            return current
        return self.persist_timeouts_tx(tx, [current.id], now)[current.id]

    def persist_timeouts_tx(self, tx: Tx, ids: Sequence[str], now: int) -> dict[str, Promise]:
        """Store the timeouts of those of ``ids`` that expired; return all of them as
        they are stored now."""
        rows = tx.all(self.sql.persist_timeouts, {"ids": self.sql.ids(ids), "now": now})
        found = {p.id: p for p in map(promise_from_row, rows)}
        if found:
            tx.settled.update(found)
            self._note_waiters_tx(tx, list(found))
        missing = [i for i in ids if i not in found]
        if missing:
            rows = tx.all(self.sql.get_many, {"ids": self.sql.ids(missing)})
            found.update((p.id, p) for p in map(promise_from_row, rows))
        return found

    # -- create and settle -----------------------------------------------------------

    def create(
        self,
        id: str,
        *,
        timeout_at: int,
        param: Value | None = None,
        tags: Mapping[str, str] | None = None,
        ikey: str | None = None,
        strict: bool = False,
    ) -> Transition:
        new = self.check_create(
            id, timeout_at=timeout_at, param=param, tags=tags, ikey=ikey, strict=strict
        )
        return self.db.write(lambda tx: self.create_tx(tx, new))

    async def acreate(
        self,
        id: str,
        *,
        timeout_at: int,
        param: Value | None = None,
        tags: Mapping[str, str] | None = None,
        ikey: str | None = None,
        strict: bool = False,
    ) -> Transition:
        new = self.check_create(
            id, timeout_at=timeout_at, param=param, tags=tags, ikey=ikey, strict=strict
        )
        return await self.db.awrite(lambda tx: self.create_tx(tx, new))

    def _settle_unit(
        self, id: str, action: SettleAction, value: Value | None, ikey: str | None, strict: bool
    ) -> Callable[[Tx], Transition]:
        id, value, ikey, strict = self.check_settle(id, value, ikey, strict)
        return lambda tx: self.settle_tx(tx, id, action, value=value, ikey=ikey, strict=strict)

    def resolve(
        self, id: str, *, value: Value | None = None, ikey: str | None = None, strict: bool = False
    ) -> Transition:
        return self.db.write(self._settle_unit(id, "resolve", value, ikey, strict))

    def reject(
        self, id: str, *, value: Value | None = None, ikey: str | None = None, strict: bool = False
    ) -> Transition:
        return self.db.write(self._settle_unit(id, "reject", value, ikey, strict))

    def cancel(
        self, id: str, *, value: Value | None = None, ikey: str | None = None, strict: bool = False
    ) -> Transition:
        return self.db.write(self._settle_unit(id, "cancel", value, ikey, strict))

    async def asettle(
        self,
        id: str,
        action: SettleAction,
        *,
        value: Value | None = None,
        ikey: str | None = None,
        strict: bool = False,
    ) -> Transition:
        return await self.db.awrite(self._settle_unit(id, action, value, ikey, strict))

    # -- reads -------------------------------------------------------------------------

    def _expired(self, promises: Sequence[Promise]) -> list[str]:
        now = self.clock()
        return [p.id for p in promises if p.pending and now >= p.timeout_at]

    def get(self, id: str) -> Promise:
        return self.get_many([id], strict=True)[id]

    async def aget(self, id: str) -> Promise:
        return (await self.aget_many([id], strict=True))[id]

    def get_many(self, ids: Sequence[str], *, strict: bool = False) -> dict[str, Promise]:
        """The promises with these ids, timeouts applied (and stored). Unknown ids are
        left out, or raise ``PromiseNotFound`` with ``strict``."""
        wanted = self._check_ids(ids)
        found = self.db.read(lambda tx: self._get_many_tx(tx, wanted))
        expired = self._expired(list(found.values()))
        if expired:
            found.update(
                self.db.write(lambda tx: self.persist_timeouts_tx(tx, expired, self.clock()))
            )
        return self._complete(wanted, found, strict)

    async def aget_many(self, ids: Sequence[str], *, strict: bool = False) -> dict[str, Promise]:
        """``get_many`` for asyncio. The reads asked for in one turn of the event loop
        (many waiters woken by one commit, say) share one query."""
        wanted = self._check_ids(ids)
        found = await self._read_together(wanted)
        expired = self._expired(list(found.values()))
        if expired:
            found.update(
                await self.db.awrite(lambda tx: self.persist_timeouts_tx(tx, expired, self.clock()))
            )
        return self._complete(wanted, found, strict)

    @staticmethod
    def _check_ids(ids: Sequence[str]) -> list[str]:
        if isinstance(ids, str) or not isinstance(ids, Sequence):
            raise InvalidArgument(f"ids must be a list of promise ids, got {type(ids).__name__}")
        return list(dict.fromkeys(check_id(i) for i in ids))

    def _get_many_tx(self, tx: Tx, ids: list[str]) -> dict[str, Promise]:
        if len(ids) == 1:
            row = tx.one(self.sql.get, {"id": ids[0]})
            return {} if row is None else {ids[0]: promise_from_row(row)}
        rows = tx.all(self.sql.get_many, {"ids": self.sql.ids(ids)})
        return {p.id: p for p in map(promise_from_row, rows)}

    @staticmethod
    def _complete(wanted: list[str], found: dict[str, Promise], strict: bool) -> dict[str, Promise]:
        if strict:
            for i in wanted:
                if i not in found:
                    raise PromiseNotFound(i)
        return {i: found[i] for i in wanted if i in found}

    def observe(self, promises: list[Promise]) -> list[Promise]:
        """``promises`` as they stand, with the timeouts of expired ones stored."""
        expired = self._expired(promises)
        if not expired:
            return promises
        stored = self.db.write(lambda tx: self.persist_timeouts_tx(tx, expired, self.clock()))
        return [stored.get(p.id, p) for p in promises]

    def search(
        self,
        id: str = "*",
        *,
        state: SearchState | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SearchPage:
        """Promises whose id matches the glob ``id`` (``*`` is the only wildcard), newest
        first, in pages of at most ``limit``. ``state="rejected"`` matches every rejected
        kind; a tag value ``"*"`` matches any value of that tag. Pass the returned
        ``cursor`` with the same filters for the next page."""
        return _search.search(self, id, state=state, tags=tags, limit=limit, cursor=cursor)

    def count_by_tag(self, key: str) -> dict[tuple[str, str], int]:
        """How many promises carry tag ``key``, per (tag value, state), from the tag
        index (no scan of the promises themselves)."""
        return _search.count_by_tag(self, key)

    def _settled_among(self, ids: list[str]) -> list[str]:
        now = self.clock()
        rows = self.db.read(
            lambda tx: tx.all(self.sql.settled_among, {"ids": self.sql.ids(ids), "now": now})
        )
        return [r[0] for r in rows]

    # -- upkeep ------------------------------------------------------------------------

    def sweep(self, now: int | None = None, *, batch: int = 500) -> int:
        """Store the timeout of every pending promise expired at ``now``; returns how many."""
        return _upkeep.sweep(self, now, batch=batch)

    def collect(self, max_age: timedelta | None = None, *, batch: int = 1000) -> int:
        """Delete promises settled more than ``max_age`` (default: the store's retention)
        ago. Their idempotency keys are forgotten with them; returns how many went."""
        return _upkeep.collect(self, max_age, batch=batch)

    # -- waiting -----------------------------------------------------------------------

    async def wait(self, id: str, *, timeout: float) -> Promise:
        """Wait until promise ``id`` is settled, or ``timeout`` seconds pass; return it
        as it is then (check ``.pending``). Wakes at once for a settle in this process,
        at once for one in another (LISTEN/NOTIFY, or the SQLite doorbell), and at
        the promise's own timeout. Raises ``PromiseNotFound`` for an unknown id."""
        return (await self.wait_all([id], timeout=timeout))[id]

    async def wait_all(self, ids: Sequence[str], *, timeout: float) -> dict[str, Promise]:
        """Wait until every promise in ``ids`` is settled, or ``timeout`` seconds pass;
        return them all as they are then. Each wake-up reads them in one query."""
        seconds = check_seconds(timeout, "timeout")
        wanted = self._check_ids(ids)
        if not wanted:
            raise InvalidArgument("ids must name at least one promise")
        loop = asyncio.get_running_loop()
        began = loop.time()
        with self.waiters.listen(wanted) as listener:
            found = await self.aget_many(wanted, strict=True)
            left = max(seconds - (loop.time() - began), 0)
            return await self.wait_listening(listener, found, timeout=left)

    def listen(self, ids: Sequence[str]) -> contextlib.AbstractContextManager[Listener]:
        """Be woken when one of ``ids`` may settle, from now on: a promise read or
        written after this needs no read again before ``wait_listening``."""
        return self.waiters.listen(self._check_ids(ids))

    async def wait_listening(
        self, listener: Listener, found: dict[str, Promise], *, timeout: float
    ) -> dict[str, Promise]:
        """``wait_all`` for promises ``found`` as they were read or written after
        ``listener`` started to listen for them (see ``listen``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + check_seconds(timeout, "timeout")
        while True:
            pending = [p for p in found.values() if p.pending]
            remaining = deadline - loop.time()
            if not pending or remaining <= 0:
                return found
            until_timeout = (min(p.timeout_at for p in pending) - self.clock()) / 1000
            pause = min(remaining, self.poll_interval, max(until_timeout, 0) + 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.event.wait(), pause)
            woken = listener.take()
            if woken:
                # A settle in this process hands over the promise itself; one made
                # elsewhere is read again (all of them in one query).
                found.update((i, p) for i, p in woken.items() if p is not None and i in found)
                stale = [i for i, p in woken.items() if p is None and i in found]
            else:  # a timeout, or the fallback poll
                stale = [p.id for p in found.values() if p.pending]
            if stale:
                found.update(await self.aget_many(stale, strict=True))

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        self.waiters.stop()
        self.db.close()
        if self.bell is not None:
            self.bell.close()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_OPEN_ERRORS: tuple[type[BaseException], ...] = (*DRIVER_ERRORS, SQLAlchemyError)


def open_store(
    url: str,
    *,
    clock: Clock = system_clock,
    max_payload_bytes: int = Limits.max_payload_bytes,
    poll_interval: float = 1.0,
    retention: timedelta = timedelta(days=7),
) -> SqlStore:
    """Open the store at ``url`` (creating or upgrading its tables if needed):
    ``sqlite:///path/file.db`` (add ``?synchronous=NORMAL`` to trade the last commits
    on power loss for speed) or ``postgresql+psycopg://user@host/dbname``."""
    backend = open_backend(url)
    shown = backend.url.render_as_string(hide_password=True)
    try:
        migrate(backend)
    except PromiseError:
        raise
    except _OPEN_ERRORS as exc:
        orig: Any = getattr(exc, "orig", None) or exc
        error: type[StoreUnavailable] = StoreUnavailable
        if isinstance(orig, DRIVER_ERRORS) and isinstance(translate(orig), StoreMisconfigured):
            error = StoreMisconfigured  # a wrong password or database: waiting will not help
        raise error(f"cannot open the store at {shown}: {orig}") from exc
    return SqlStore(
        backend,
        clock=clock,
        limits=Limits(max_payload_bytes=max_payload_bytes),
        poll_interval=poll_interval,
        retention=retention,
    )


def open_store_waiting(url: str, **options: Any) -> SqlStore:
    """``open_store``, waiting for a database that cannot be reached yet (a worker
    started before its database, or during an outage) instead of failing, and saying so
    in the log before each pause. A database that refuses the connection itself
    (``StoreMisconfigured``: wrong credentials, no such database) and a bad URL are
    raised at once: waiting would not help."""
    pause = 0.5
    while True:
        try:
            return open_store(url, **options)
        except StoreMisconfigured:
            raise
        except StoreUnavailable as exc:
            log.warning("the database is not reachable yet (%s); trying again in %.1f s",
                        exc, pause)  # fmt: skip
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


__all__ = ["Clock", "NewPromise", "SqlStore", "open_store", "open_store_waiting", "system_clock"]
