"""The one boundary between the store and its database: a writer that commits many
callers' writes together, and readers beside it.

* **Writes** are *units*: functions of a ``Tx`` that run statements and return a value.
  One writer thread per store runs them. It takes every unit waiting at that moment,
  runs each in its own savepoint inside one transaction, and commits once — one flush
  for many callers (group commit). A unit that raises is rolled back alone; the others
  commit. A caller is answered only after the commit: acknowledged means durable.
  A unit may run again if its transaction is retried (deadlock on PostgreSQL), so it
  must only touch its ``Tx``.
* **Non-durable units** (``durable=False``: the runtime's internal checkpoints) commit
  without a flush of their own when the whole batch is non-durable: still atomic and in
  order, and made durable by the next flushed commit; a power loss may lose them.
* **Reads** run on their own connections (a small pool), on the calling thread, or for
  async callers on the store's reader threads.
* After each commit the writer reports what it changed (settled ids, tasks made
  ready) to ``on_commit``, so waiters in this process wake at once.

Driver errors never leave this module raw: they become ``StoreUnavailable`` (transient,
nothing changed) or ``InvariantViolation`` (see ``backends.translate``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from promises.backends import DRIVER_ERRORS, Backend, translate
from promises.errors import InvariantViolation, PromiseError, StoreUnavailable
from promises.records import Promise
from promises.sql import Statements, statements

T = TypeVar("T")
log = logging.getLogger("promises.database")

#: The most units one transaction takes; the rest wait for the next one.
MAX_BATCH = 512


class Tx:
    """A transaction (or, for readers, a connection): run statements, note changes."""

    __slots__ = ("_cursor", "kinds", "settled", "sql", "tasks_changed")

    def __init__(self, cursor: Any, sql: Statements) -> None:
        self._cursor = cursor
        self.sql = sql
        #: Promises this unit settled, by id, as they are now (None when not read), for
        #: waiters in this process: they need not read them again.
        self.settled: dict[str, Promise | None] = {}
        #: The kinds of the tasks this unit made claimable or whose ready time it moved
        #: (for workers, here and in the processes the store tells).
        self.kinds: set[str] = set()
        #: Set when it changed tasks of kinds it cannot tell: every worker looks.
        self.tasks_changed = False

    def ready(self, kind: str | None) -> None:
        """Note that a task of ``kind`` (None: unknown) became claimable or moved."""
        if kind is None:
            self.tasks_changed = True
        else:
            self.kinds.add(kind)

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> int:
        cursor = self._cursor
        cursor.execute(statement, params or {})
        count: int = cursor.rowcount
        return count

    def executemany(self, statement: str, params: Iterable[Mapping[str, Any]]) -> None:
        self._cursor.executemany(statement, list(params))

    def one(self, statement: str, params: Mapping[str, Any] | None = None) -> Any:
        cursor = self._cursor
        cursor.execute(statement, params or {})
        return cursor.fetchone()

    def all(self, statement: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        cursor = self._cursor
        cursor.execute(statement, params or {})
        rows: list[Any] = cursor.fetchall()
        return rows

    def scalar(self, statement: str, params: Mapping[str, Any] | None = None) -> Any:
        row = self.one(statement, params)
        return None if row is None else row[0]


@dataclass(eq=False)
class _Unit(Generic[T]):
    fn: Callable[[Tx], T]
    durable: bool
    done: Callable[[T | None, BaseException | None], None]
    settled: dict[str, Promise | None] = field(default_factory=dict)
    #: The kinds it made ready; None: unknown kinds.
    kinds: set[str] | None = field(default_factory=set)


#: After a commit: the promises it settled, and the kinds of tasks it made ready
#: (None: unknown kinds).
OnCommit = Callable[[dict[str, Promise | None], set[str] | None], None]


class Database:
    def __init__(self, backend: Backend, *, readers: int = 4) -> None:
        self.backend = backend
        self.sql = statements(backend.name)
        self.on_commit: OnCommit | None = None
        self._units: queue.SimpleQueue[_Unit[Any] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(
            target=self._write_loop, name="promises-writer", daemon=True
        )
        self._writer_started = False
        #: The writer connection's current synchronous setting (SQLite), by connection.
        self._synchronous: dict[int, str] = {}
        #: Whether the writer has sent the current batch's COMMIT.
        self._committing = False
        self._start_lock = threading.Lock()
        self._closed = False
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._reader_slots = threading.BoundedSemaphore(readers)
        self._reader_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=readers, thread_name_prefix="promises-reader"
        )

    # -- writing ---------------------------------------------------------------------

    def _submit(self, unit: _Unit[Any]) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed; open it again to use it")
        if threading.current_thread() is self._writer:
            raise InvariantViolation("a write unit tried to write through the store again")
        if not self._writer_started:
            with self._start_lock:
                if not self._writer_started:
                    self._writer.start()
                    self._writer_started = True
        self._units.put(unit)

    def write(self, fn: Callable[[Tx], T], *, durable: bool = True) -> T:
        """Run ``fn`` in a write transaction; return once it is committed."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def done(value: T | None, error: BaseException | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)  # type: ignore[arg-type]

        self._submit(_Unit(fn, durable, done))
        return future.result()

    async def awrite(self, fn: Callable[[Tx], T], *, durable: bool = True) -> T:
        """``write`` for asyncio: the event loop waits without blocking."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(value: T | None, error: BaseException | None) -> None:
            if future.done():  # the caller was cancelled; the write happened regardless
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)  # type: ignore[arg-type]

        def done(value: T | None, error: BaseException | None) -> None:
            # RuntimeError: the loop is closed, and nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, value, error)

        self._submit(_Unit(fn, durable, done))
        return await future

    def _write_loop(self) -> None:
        conn: Any = None
        stopping = False
        while not stopping:
            first = self._units.get()
            if first is None:
                break
            batch: list[_Unit[Any]] = [first]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._units.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            try:
                conn, outcomes = self._run_batch(conn, batch)
            except BaseException as exc:  # every unit must be answered
                failure = translate(exc) if isinstance(exc, DRIVER_ERRORS) else exc
                if not isinstance(failure, PromiseError):
                    log.exception("the writer failed on an unexpected error")
                    failure = StoreUnavailable(f"the store's writer failed ({exc!r}); try again")
                for unit in batch:
                    unit.done(None, failure)
                self._discard(conn)
                conn, self._synchronous = None, {}
                continue
            settled: dict[str, Promise | None] = {}
            kinds: set[str] | None = set()
            for unit, (value, error) in zip(batch, outcomes, strict=True):
                if error is None:
                    settled.update(unit.settled)
                    kinds = None if kinds is None or unit.kinds is None else kinds | unit.kinds
                unit.done(value, error)
            if (settled or kinds != set()) and self.on_commit is not None:
                try:
                    self.on_commit(settled, kinds)
                except Exception:
                    log.exception("a commit listener failed")
        self._discard(conn)
        # Anything submitted after close: refuse it rather than leave it hanging.
        while True:
            try:
                late = self._units.get_nowait()
            except queue.Empty:
                return
            if late is not None:
                late.done(None, StoreUnavailable("the store is closed; open it again to use it"))

    def _run_batch(
        self, conn: Any, batch: list[_Unit[Any]]
    ) -> tuple[Any, list[tuple[Any, BaseException | None]]]:
        """Commit ``batch``; returns the connection used and each unit's outcome. A
        connection that went bad while idle (the server restarted, an administrator
        terminated it) fails at the first statement, before anything was done: the
        batch then runs once more on a new connection."""
        reused = conn is not None
        if conn is None:
            conn = self.backend.connect("writer")
        self._committing = False
        try:
            return conn, self._commit_batch(conn, batch)
        except DRIVER_ERRORS as exc:
            if not reused or self._committing or not isinstance(translate(exc), StoreUnavailable):
                raise
            self._discard(conn)
            self._synchronous = {}
            log.info("the database connection was lost while idle (%s); reconnecting", exc)
        conn = self.backend.connect("writer")
        return conn, self._commit_batch(conn, batch)

    def _discard(self, conn: Any) -> None:
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                conn.close()

    def _commit_batch(
        self, conn: Any, batch: list[_Unit[Any]]
    ) -> list[tuple[Any, BaseException | None]]:
        durable = any(unit.durable for unit in batch)
        for attempt in range(3):
            try:
                return self._try_batch(conn, batch, durable)
            except DRIVER_ERRORS as exc:
                self._rollback(conn)
                sqlstate = getattr(exc, "sqlstate", None)
                if sqlstate in ("40001", "40P01") and attempt < 2:
                    continue  # serialization failure or deadlock: the batch may run again
                raise
        raise InvariantViolation("unreachable: the batch loop ended without an outcome")

    def _rollback(self, conn: Any) -> None:
        try:
            if self.backend.name == "sqlite":
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            else:
                conn.rollback()
        except DRIVER_ERRORS:
            pass

    def _try_batch(
        self, conn: Any, batch: list[_Unit[Any]], durable: bool
    ) -> list[tuple[Any, BaseException | None]]:
        sqlite = self.backend.name == "sqlite"
        cursor = conn.cursor()
        if sqlite:
            wanted = self.backend.synchronous if durable else "NORMAL"
            if self._synchronous.get(id(conn), self.backend.synchronous) != wanted:
                cursor.execute(f"PRAGMA synchronous={wanted}")  # only outside a transaction
                self._synchronous = {id(conn): wanted}
            cursor.execute("BEGIN IMMEDIATE")
        elif not durable:
            cursor.execute("SET LOCAL synchronous_commit = off")
        single = len(batch) == 1
        outcomes: list[tuple[Any, BaseException | None]] = []
        for unit in batch:
            tx = Tx(cursor, self.sql)
            if not single:
                cursor.execute("SAVEPOINT unit")
            try:
                value = unit.fn(tx)
            except BaseException as exc:
                if isinstance(exc, DRIVER_ERRORS) and _connection_level(exc):
                    raise  # the whole transaction is lost
                if single:
                    self._rollback(conn)
                    return [(None, translate(exc) if isinstance(exc, DRIVER_ERRORS) else exc)]
                cursor.execute("ROLLBACK TO SAVEPOINT unit")
                cursor.execute("RELEASE SAVEPOINT unit")
                outcomes.append((None, translate(exc) if isinstance(exc, DRIVER_ERRORS) else exc))
                continue
            if not single:
                cursor.execute("RELEASE SAVEPOINT unit")
            unit.settled, unit.kinds = tx.settled, None if tx.tasks_changed else tx.kinds
            outcomes.append((value, None))
        self._committing = True  # from here a failure leaves the outcome unknown
        if sqlite:
            cursor.execute("COMMIT")
        else:
            conn.commit()
        return outcomes

    # -- reading ---------------------------------------------------------------------

    @contextmanager
    def _reader(self, fresh: bool = False) -> Iterator[tuple[Any, bool]]:
        """A read connection, and whether it was used before."""
        if self._closed:
            raise StoreUnavailable("the store is closed; open it again to use it")
        self._reader_slots.acquire()
        conn = None
        try:
            try:
                if fresh:
                    raise queue.Empty
                conn, reused = self._idle.get_nowait(), True
            except queue.Empty:
                conn, reused = self.backend.connect("reader"), False
            yield conn, reused
        except DRIVER_ERRORS:
            if conn is not None:
                self._discard(conn)  # it may be broken: never hand it out again
                conn = None
            raise
        finally:
            if conn is not None:
                if self._closed:
                    self._discard(conn)
                else:
                    self._idle.put(conn)
            self._reader_slots.release()

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` on a read connection, on this thread. Each statement reads a
        consistent snapshot; use one statement where consistency matters. A pooled
        connection that went bad while idle is replaced once, transparently."""
        for attempt in (1, 2):
            try:
                with self._reader(fresh=attempt > 1) as (conn, reused):
                    return fn(Tx(conn.cursor(), self.sql))
            except DRIVER_ERRORS as exc:
                error = translate(exc)
                if attempt == 1 and reused and isinstance(error, StoreUnavailable):
                    self._drop_idle()  # its siblings went bad the same way, most likely
                    continue
                raise error from exc
        raise InvariantViolation("unreachable: the read loop ended without an outcome")

    async def aread(self, fn: Callable[[Tx], T]) -> T:
        """``read`` for asyncio, on the store's reader threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self.read, fn)

    # -- lifecycle -------------------------------------------------------------------

    def _drop_idle(self) -> None:
        while True:
            try:
                self._discard(self._idle.get_nowait())
            except queue.Empty:
                return

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer_started:
            self._units.put(None)
            self._writer.join(timeout=30)
        self._reader_pool.shutdown(wait=False, cancel_futures=True)
        self._drop_idle()


def _connection_level(exc: BaseException) -> bool:
    """A driver error that ends the transaction (connection lost, database locked
    beyond the busy timeout), as opposed to one statement's refusal."""
    error = translate(exc)
    return isinstance(error, StoreUnavailable)
