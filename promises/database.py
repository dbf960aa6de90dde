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
  A caller may also write without a flush what it will not acknowledge before a later
  flushed commit (``Runtime.astart_and_wait``'s start, flushed by the job's settle).
  So a durable unit must flush even when it writes nothing (``aflush`` is such a
  unit): SQLite syncs no commit that wrote nothing, so after each durable batch the
  writer also syncs the log itself; on PostgreSQL the unit must write to the log
  (PostgreSQL flushes only the commit of a transaction that did).
* **One-statement units** (``one_statement=True``: a job's start and end, going to
  sleep, a flush) write all they write with their first statement, or nothing when
  they go on to others (a fallback to the general path), and raise after it only when
  it wrote nothing. So that statement may commit by itself. On PostgreSQL such a
  unit alone in its batch runs in autocommit: the statement is its own transaction,
  one round trip instead of three (``BEGIN``, the statement, ``COMMIT``). A second
  statement begins a transaction, so the rest is atomic. Non-durable ones run on a
  second connection whose commits are not flushed.
* **A unit may declare its first statement** (``first``: made once, when first
  asked, then the same object each time), and must then run it first. On PostgreSQL
  the writer sends the declared first statements of a batch's leading units with the
  transaction's ``BEGIN`` in one round trip (a pipeline), and each unit then finds
  its statement's result: a batch of n such units takes two round trips, not n + 2.
  Those statements ran before the units' rest, so a unit that goes on to more
  statements while later units' were sent has its batch rolled back and run again
  with nothing sent ahead: each unit's statements in turn, as without a pipeline.
* **A batch of one-statement units that all declared their first statements** (what
  a busy server mostly writes) commits in one round trip on PostgreSQL: ``BEGIN``,
  the statements and ``COMMIT`` go together (``_Writer._run_together``). A unit that
  goes on runs its rest after, in a transaction of its own, as it would alone. A
  refused statement skips the ``COMMIT``: nothing is written, and the batch runs as
  any other, refusing that unit alone.
* **Reads** run on their own connections (a small pool), on the calling thread, or for
  async callers on the store's reader threads.
* After each commit the writer reports what it changed (settled ids, tasks made
  ready, now or from a later time) to ``on_commit``, so waiters in this process wake at
  once.

Driver errors never leave this module raw: they become ``StoreUnavailable`` (transient,
nothing changed) or ``InvariantViolation`` (see ``backends.translate``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from promises.backends import DRIVER_ERRORS, Backend, translate
from promises.errors import InvariantViolation, OutcomeUnknown, PromiseError, StoreUnavailable
from promises.loopcalls import call_soon, gathered
from promises.records import Promise
from promises.sql import Statements, statements

T = TypeVar("T")
log = logging.getLogger("promises.database")

#: The most units one transaction takes; the rest wait for the next one.
MAX_BATCH = 512
#: A connection idle longer than this may have been dropped without a word (a NAT or
#: a load balancer forgets idle connections). A unit alone then runs in a transaction
#: on it, not in autocommit (``_run_alone``), and a batch does not send its ``COMMIT``
#: with its statements (``_run_together``): a dead connection then fails it before
#: its ``COMMIT`` is sent, so nothing was done and it runs again on a new connection.
#: On a connection used more recently, a drop nobody saw would leave the outcome of
#: that unit, or batch, unknown: the price of the round trips saved.
AUTOCOMMIT_IDLE_S = 30.0


class Tx:
    """A transaction (or, for readers, a connection): run statements, note changes."""

    __slots__ = ("_before_second", "_cursor", "_first", "_sent", "first_done", "kinds",
                 "later", "settled", "sql", "statements", "tasks_changed")  # fmt: skip

    def __init__(
        self, cursor: Any, sql: Statements, before_second: Callable[[], None] | None = None,
        first: First | None = None, sent: Any = None,
    ) -> None:  # fmt: skip
        self._cursor = cursor
        self.sql = sql
        #: The unit's declared first statement, which it must run first; ``sent``: the
        #: cursor holding its result when it was sent ahead (it then takes that result).
        self._first, self._sent = first, sent
        #: How many statements it ran (or began to run).
        self.statements = 0
        #: Whether its first statement ran to the end (or its result, sent ahead, was
        #: taken): an error after that comes after what it wrote.
        self.first_done = False
        #: Called before the second statement (a unit run in autocommit: it begins the
        #: transaction the rest of the unit runs in).
        self._before_second = before_second
        #: Promises this unit settled, by id, as they are now (None when not read), for
        #: waiters in this process: they need not read them again.
        self.settled: dict[str, Promise | None] = {}
        #: The kinds of the tasks this unit made claimable now, or at a time it cannot
        #: tell (for workers, here and in the processes the store tells).
        self.kinds: set[str] = set()
        #: Kinds of tasks this unit made ready only at a later time, with the earliest
        #: (store ms): a worker of this process that looks sooner anyway is not woken.
        self.later: dict[str, int] = {}
        #: Set when it changed tasks of kinds it cannot tell: every worker looks.
        self.tasks_changed = False

    def ready(self, kind: str | None, at: int | None = None) -> None:
        """Note that a task of ``kind`` (None: unknown) became claimable or moved; ``at``:
        it is ready only from then (store ms), not now."""
        if kind is None:
            self.tasks_changed = True
        elif at is None:
            self.kinds.add(kind)
        else:
            self.later[kind] = min(at, self.later.get(kind, at))

    def _next(self) -> Any:
        """The cursor, for one more statement."""
        self.statements += 1
        if self.statements == 2 and self._before_second is not None:
            self._before_second()
        return self._cursor

    def _run(self, statement: str, params: Mapping[str, Any] | None) -> Any:
        cursor = self._next()
        if self._first is not None:
            declared, self._first = self._first(), None
            if declared is not None and (
                statement is not declared.sql or params is not declared.params
            ):
                raise InvariantViolation(
                    "a write unit's first statement is not the one it declared"
                )
            if self._sent is not None:
                self.first_done = True
                return self._sent
        cursor.execute(statement, params or {})
        self.first_done = True
        return cursor

    def check_declared(self) -> None:
        """After the unit: it ran the first statement it declared (sent ahead, that
        statement's writes are in the transaction whether it did or not)."""
        if self._first is not None and self._first() is not None:
            raise InvariantViolation("a write unit declared a first statement and did not run it")

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement; returns how many rows it changed."""
        count: int = self._run(statement, params).rowcount
        return count

    def executemany(self, statement: str, params: Iterable[Mapping[str, Any]]) -> None:
        self._next().executemany(statement, list(params))
        self.first_done = True

    def one(self, statement: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._run(statement, params).fetchone()

    def all(self, statement: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        rows: list[Any] = self._run(statement, params).fetchall()
        return rows

    def scalar(self, statement: str, params: Mapping[str, Any] | None = None) -> Any:
        row = self.one(statement, params)
        return None if row is None else row[0]


class Statement(NamedTuple):
    """A statement and its parameters: a unit's declared first (``Database.write``)."""

    sql: str
    params: Mapping[str, Any]


#: A unit's first statement, declared (see the module's docstring): None when it has
#: none to declare this time (it then runs as any other unit).
First = Callable[[], Statement | None]


@dataclass(eq=False)
class _Unit(Generic[T]):
    fn: Callable[[Tx], T]
    durable: bool
    done: Callable[[T | None, BaseException | None], None]
    settled: dict[str, Promise | None] = field(default_factory=dict)
    #: The kinds it made ready; None: unknown kinds.
    kinds: set[str] | None = field(default_factory=set)
    #: The kinds it made ready only later, with the earliest time (``Tx.later``).
    later: dict[str, int] = field(default_factory=dict)
    #: It writes with one statement (see the module's docstring).
    one_statement: bool = False
    #: Its declared first statement (see the module's docstring).
    first: First | None = None


#: After a commit: the promises it settled, the kinds of tasks it made ready (None:
#: unknown kinds), and the kinds it made ready only later, with the earliest time.
OnCommit = Callable[[dict[str, Promise | None], set[str] | None, dict[str, int]], None]


def _session(conn: Any, statement: str) -> None:
    """Set up a new psycopg connection of the writer: its session (``statement``), and
    autocommit, so that the writer begins each transaction itself (``BEGIN``, sent with
    the first statements; psycopg's own waits for its answer first). The connection is
    closed if that fails."""
    try:
        conn.autocommit = True
        conn.execute(statement, prepare=False)
    except BaseException:
        _discard(conn)
        raise


def _declared(batch: list[_Unit[Any]]) -> list[Statement]:
    """The declared first statements of the leading units of ``batch``, up to the first
    unit with none this time (or that cannot make it: it meets that error when it
    runs, its failure alone)."""
    statements = []
    for unit in batch:
        try:
            statement = unit.first() if unit.first is not None else None
        except Exception:
            break
        if statement is None:
            break
        statements.append(statement)
    return statements


def _begin(conn: Any, durable: bool = True) -> None:
    """Begin a transaction on a writer's psycopg connection (in autocommit, ``_session``);
    not ``durable``: its commit is not flushed (the setting goes with the ``BEGIN``)."""
    conn.execute("BEGIN" if durable else "BEGIN; SET LOCAL synchronous_commit = off",
                 prepare=False)  # fmt: skip


def _send(
    conn: Any, statements: list[Statement], *, commit: bool = False, durable: bool = True
) -> list[Any]:
    """Begin a transaction with ``statements`` (and, if ``commit``, its ``COMMIT``,
    flushed if ``durable``) in one round trip (a pipeline); the cursors that hold the
    statements' results. Raises the first refusal."""
    with conn.pipeline():
        _begin(conn)
        sent = [conn.execute(s.sql, s.params) for s in statements]
        if commit:
            if not durable:
                conn.execute("SET LOCAL synchronous_commit = off", prepare=False)
            conn.execute("COMMIT", prepare=False)
    return sent


def _discard(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):  # a broken connection may fail to close
            conn.close()


def _sync(log: str | None) -> None:
    """Sync a SQLite database's write-ahead log to disk: every commit so far, of any
    process, is then durable, as at a commit made with synchronous=FULL. What was
    checkpointed was synced before (SQLite syncs the log, then the database)."""
    if log is None:
        raise InvariantViolation("the SQLite writer has no log to sync")
    try:
        # It exists while the writer's connection is open: SQLite removes it only at
        # the last connection's close. Missing, the path is wrong: that must not pass.
        fd = os.open(log, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutcomeUnknown(
            f"the database's log could not be synced to disk ({exc}); the write was "
            "committed but may be lost on power loss: check the disk, then retry"
        ) from exc


class _Writer(threading.Thread):
    """One writer thread and its connection: takes every unit waiting in the shared
    queue, commits them together, answers each."""

    def __init__(self, database: Database, number: int) -> None:
        super().__init__(name=f"promises-writer-{number}", daemon=True)
        self.db = database
        self.backend = database.backend
        self.conn: Any = None
        #: SQLite: the connection's synchronous setting, switched per batch, and the
        #: write-ahead log, which the writer syncs after a durable batch.
        self.synchronous: str = database.backend.synchronous
        self.log: str | None = None
        #: Whether the current batch's COMMIT was sent: a failure after it leaves the
        #: outcome unknown, so the batch must not be run again.
        self.committing = False
        #: PostgreSQL: the connection for non-durable units run alone in autocommit
        #: (``_run_alone``), whose commits are not flushed.
        self.quick: Any = None
        #: When each connection was made or last answered (``time.monotonic``).
        self.conn_used = self.quick_used = 0.0

    def run(self) -> None:
        units = self.db._units
        stopping = False
        while not stopping:
            first = units.get()
            if first is None:
                break
            batch: list[_Unit[Any]] = [first]
            while len(batch) < MAX_BATCH:
                try:
                    more = units.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            self._answer(batch)
        self._reset()

    def _reset(self) -> None:
        _discard(self.conn)
        _discard(self.quick)
        self.conn, self.synchronous, self.log = None, self.backend.synchronous, None
        self.quick = None

    def _answer(self, batch: list[_Unit[Any]]) -> None:
        # The answers, and the wake-ups of this commit, reach each event loop at once.
        with gathered():
            self._answer_all(batch)

    def _answer_all(self, batch: list[_Unit[Any]]) -> None:
        try:
            outcomes = self._run_batch(batch)
        except BaseException as exc:  # every unit must be answered
            failure = translate(exc) if isinstance(exc, DRIVER_ERRORS) else exc
            if not isinstance(failure, PromiseError):
                log.exception("the writer failed on an unexpected error")
                failure = StoreUnavailable(f"the store's writer failed ({exc!r}); try again")
            elif self.committing and isinstance(failure, StoreUnavailable):
                failure = OutcomeUnknown(
                    f"the connection to the database broke while it committed ({exc}); the "
                    "write may have been done or not: retry with the same idempotency key"
                )
            for unit in batch:
                unit.done(None, failure)
            self._reset()
            return
        settled: dict[str, Promise | None] = {}
        kinds: set[str] | None = set()
        later: dict[str, int] = {}
        for unit, (value, error) in zip(batch, outcomes, strict=True):
            if error is None or isinstance(error, OutcomeUnknown):  # it may have written
                settled.update(unit.settled)
                kinds = None if kinds is None or unit.kinds is None else kinds | unit.kinds
                for kind, at in unit.later.items():
                    later[kind] = min(at, later.get(kind, at))
            unit.done(value, error)
        if (settled or kinds != set() or later) and self.db.on_commit is not None:
            try:
                self.db.on_commit(settled, kinds, later)
            except Exception:
                log.exception("a commit listener failed")

    def _run_batch(self, batch: list[_Unit[Any]]) -> list[tuple[Any, BaseException | None]]:
        """Commit ``batch``; returns each unit's outcome. A connection that went bad
        while idle (the server restarted, an administrator terminated it) fails at the
        first statement, before anything was done: the batch then runs once more on a
        new connection."""
        reused = self.conn is not None
        if self.conn is None:
            self.conn = self._connect()
        self.committing = False
        try:
            return self._commit_batch(batch)
        except DRIVER_ERRORS as exc:
            if not reused or self.committing or not isinstance(translate(exc), StoreUnavailable):
                raise
            log.info("the database connection was lost while idle (%s); reconnecting", exc)
        self._reset()
        self.conn = self._connect()
        return self._commit_batch(batch)

    def _connect(self) -> Any:
        conn = self.backend.connect("writer")
        if self.backend.name == "sqlite":
            main = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
            self.log = f"{main[0]}-wal"  # SQLite's own path: absolute, symlinks resolved
        else:
            # Acknowledged means durable: a role or database set to commit without a
            # flush would make every flush a no-op. Stronger settings (waiting for
            # replicas) are kept.
            _session(conn, "SELECT set_config('synchronous_commit', 'on', false) "
                           "WHERE current_setting('synchronous_commit') = 'off'")  # fmt: skip
        self.conn_used = time.monotonic()
        return conn

    def _commit_batch(self, batch: list[_Unit[Any]]) -> list[tuple[Any, BaseException | None]]:
        durable = any(unit.durable for unit in batch)
        alone = (
            len(batch) == 1
            and batch[0].one_statement
            and self.backend.name != "sqlite"
            and self._may_autocommit(batch[0].durable)
        )
        together = (
            len(batch) > 1
            and self.backend.name != "sqlite"
            and all(unit.one_statement and unit.first is not None for unit in batch)
            and self._may_autocommit(durable=True)
        )
        for attempt in range(3):
            try:
                if alone:
                    return [self._run_alone(batch[0])]
                statements = _declared(batch) if together else []
                if len(statements) == len(batch):
                    together_outcomes = self._run_together(batch, statements, durable)
                    if together_outcomes is not None:
                        return together_outcomes
                # Most batches have no unit that fails: run them without a savepoint per
                # unit. If a unit does fail, roll back and run the batch again with
                # savepoints, so that only that unit is refused.
                outcomes = None
                if len(batch) > 1:
                    outcomes = self._try_batch(batch, durable, careful=False)
                if outcomes is None:
                    outcomes = self._try_batch(batch, durable, careful=True)
                if outcomes is None:
                    raise InvariantViolation("a careful batch must give every unit an outcome")
                self._answered(durable=True)
                return outcomes
            except DRIVER_ERRORS as exc:
                self._rollback()
                sqlstate = getattr(exc, "sqlstate", None)
                if sqlstate in ("40001", "40P01") and attempt < 2 and not self.committing:
                    continue  # serialization failure or deadlock: the batch may run again
                raise
        raise InvariantViolation("unreachable: the batch loop ended without an outcome")

    def _run_alone(self, unit: _Unit[Any]) -> tuple[Any, BaseException | None]:
        """PostgreSQL: a one-statement unit alone in its batch, in autocommit. Its first
        statement commits by itself (flushed or not, by the connection it runs on); a
        second begins a transaction for the rest, committed at the end. Raises a driver
        error only for a retry (the first statement was refused; nothing was written)
        or when the outcome is unknown (the connection broke)."""
        conn = self._autocommit_connection(unit.durable)
        tx = Tx(conn.cursor(), self.db.sql, before_second=lambda: _begin(conn), first=unit.first)
        self.committing = True  # the statement is its own commit
        try:
            value, error = self._rest_of(unit, tx, conn)
        except DRIVER_ERRORS:
            if not conn.broken:  # refused: nothing was written, it may run again
                self._answered(unit.durable)
                self.committing = False
            raise
        self._answered(unit.durable)
        if error is None and unit.durable:
            self.db._flushed()
        return value, error

    def _run_together(
        self, batch: list[_Unit[Any]], statements: list[Statement], durable: bool
    ) -> list[tuple[Any, BaseException | None]] | None:
        """PostgreSQL: a batch of one-statement units that all declared their first
        statements, committed in one round trip: ``BEGIN``, the statements and ``COMMIT``
        go together (a pipeline). Each unit then takes its statement's result; one that
        goes on runs its rest in a transaction of its own, after (as a unit alone in
        autocommit does, ``_run_alone``). None when a statement was refused: the
        ``COMMIT`` did not run, nothing was written, and the batch runs as any other."""
        conn = self._autocommit_connection(durable=True)
        self.committing = True  # the COMMIT goes with the statements
        try:
            sent = _send(conn, statements, commit=True, durable=durable)
        except Exception as exc:
            if isinstance(exc, DRIVER_ERRORS) and conn.broken:
                raise  # the outcome is unknown
            self.committing = False  # refused, or not sent (psycopg raised a raw error)
            self._rollback()
            return None
        self._answered(durable=True)
        if durable:
            self.db._flushed()
        cursor = conn.cursor()  # for the rests, made while the connection is known good
        outcomes: list[tuple[Any, BaseException | None]] = []
        for unit, result in zip(batch, sent, strict=True):
            begin = functools.partial(_begin, conn, durable=unit.durable)
            tx = Tx(cursor, self.db.sql, before_second=begin, first=unit.first, sent=result)
            try:
                outcomes.append(self._rest_of(unit, tx, conn, committed=True))
            except Exception as exc:  # its rest broke, after its first statement committed
                unit.settled, unit.kinds, unit.later = dict.fromkeys(tx.settled), None, tx.later
                outcomes.append((None, _done_in_part(exc)))
        return outcomes

    def _rest_of(
        self, unit: _Unit[Any], tx: Tx, conn: Any, *, committed: bool = False
    ) -> tuple[Any, BaseException | None]:
        """Run a one-statement unit whose first statement commits by itself (alone in
        autocommit, or sent with its batch and its ``COMMIT``: ``committed``): a second
        statement begins a transaction for the rest, committed here. Its outcome; raises
        a driver error when the outcome is unknown (the connection broke) or when its
        first statement, run here, was refused for a reason that may pass (a deadlock)."""
        try:
            try:
                value = unit.fn(tx)
                tx.check_declared()
                if tx.statements > 1:
                    conn.commit()  # the rest of the unit, if it went on
            finally:
                if tx.statements > 1 and not conn.broken:
                    conn.rollback()  # what a failure after the first statement left open
        except BaseException as exc:
            if committed and not tx.first_done:
                return None, InvariantViolation(
                    f"a write unit did not run the first statement it declared ({exc}); "
                    "that statement was committed with its batch"
                )
            if not isinstance(exc, DRIVER_ERRORS):
                return None, exc  # its first statement wrote nothing (the unit's contract)
            refused = tx.statements == 1 and not tx.first_done  # the first, which failed
            if conn.broken or (refused and _connection_level(exc)):
                raise
            if refused:
                return None, translate(exc)
            # Its first statement committed, the rest did not: say so, and wake whoever
            # may wait on what the first wrote, by id only (what it noted after that was
            # rolled back): they read again; a needless wake-up costs only that read.
            unit.settled, unit.kinds, unit.later = dict.fromkeys(tx.settled), None, tx.later
            return None, _done_in_part(exc)
        unit.settled, unit.kinds = tx.settled, None if tx.tasks_changed else tx.kinds
        unit.later = tx.later
        return value, None

    def _may_autocommit(self, durable: bool) -> bool:
        """Whether a unit alone may run in autocommit: not on a connection idle so long
        it may be gone unseen (``AUTOCOMMIT_IDLE_S``). The quick connection is then
        replaced; a new one is safe."""
        now = time.monotonic()
        if durable:
            return now - self.conn_used < AUTOCOMMIT_IDLE_S
        if self.quick is not None and now - self.quick_used >= AUTOCOMMIT_IDLE_S:
            _discard(self.quick)
            self.quick = None
        return True

    def _answered(self, durable: bool) -> None:
        """Note that a connection answered: the main one (durable), or the quick one."""
        if durable:
            self.conn_used = time.monotonic()
        else:
            self.quick_used = time.monotonic()

    def _autocommit_connection(self, durable: bool) -> Any:
        """The connection a unit run alone goes on: the writer's own for a durable one,
        the quick one (its commits are not flushed) for another. A connection the server
        ended while it was idle (an administrator terminated it, the server restarted)
        has sent its last words or closed: it is readable. It is replaced first, since a
        statement in autocommit that fails may have committed or not."""
        if not durable and self.quick is None:
            self.quick = self._connect_quick()
        conn = self.conn if durable else self.quick
        if _ended(conn):
            log.info("the database connection was lost while idle; reconnecting")
            _discard(conn)
            if durable:
                self.conn = conn = self._connect()
            else:
                self.quick = conn = self._connect_quick()
        return conn

    def _connect_quick(self) -> Any:
        conn = self.backend.connect("writer")
        _session(conn, "SET synchronous_commit = off")
        self.quick_used = time.monotonic()
        return conn

    def _rollback(self) -> None:
        conn = self.conn
        try:
            if self.backend.name == "sqlite":
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            else:
                conn.rollback()
        except DRIVER_ERRORS:
            pass

    def _try_batch(
        self, batch: list[_Unit[Any]], durable: bool, *, careful: bool, ahead: bool = True
    ) -> list[tuple[Any, BaseException | None]] | None:
        """One transaction for ``batch``. ``careful``: a savepoint per unit (when there
        are several), so a failing unit is rolled back alone. Not careful: no savepoints;
        a failing unit rolls everything back and this returns None. ``ahead``: declared
        first statements may be sent ahead (PostgreSQL, no savepoints)."""
        conn = self.conn
        sqlite = self.backend.name == "sqlite"
        cursor = conn.cursor()
        if sqlite:
            wanted = self.backend.synchronous if durable else "NORMAL"
            if self.synchronous != wanted:
                cursor.execute(f"PRAGMA synchronous={wanted}")  # only outside a transaction
                self.synchronous = wanted
            cursor.execute("BEGIN IMMEDIATE")
        savepoints = careful and len(batch) > 1
        sent: list[Any] = []
        if not sqlite:
            if conn.info.transaction_status.name != "IDLE":
                raise InvariantViolation("the writer's connection was left in a transaction")
            try:
                # BEGIN, with the leading units' declared first statements.
                sent = _send(conn, _declared(batch) if ahead and not savepoints else [])
            except DRIVER_ERRORS as exc:  # a statement refused: the transaction is lost
                if _connection_level(exc):
                    raise
                self._rollback()
                return [(None, translate(exc))] if careful else None
            except Exception:  # not sent (psycopg raised a raw error, e.g. encoding): its
                self._rollback()  # unit meets it when it runs, and fails alone
                return self._try_batch(batch, durable, careful=careful, ahead=False)
        outcomes: list[tuple[Any, BaseException | None]] = []
        for n, unit in enumerate(batch):
            tx = Tx(cursor, self.db.sql, first=unit.first, sent=sent[n] if n < len(sent) else None)
            if savepoints:
                cursor.execute("SAVEPOINT unit")
            try:
                value = unit.fn(tx)
                tx.check_declared()
            except BaseException as exc:
                if isinstance(exc, DRIVER_ERRORS) and _connection_level(exc):
                    raise  # the whole transaction is lost
                failure = translate(exc) if isinstance(exc, DRIVER_ERRORS) else exc
                if not savepoints:
                    self._rollback()
                    return [(None, failure)] if careful else None
                cursor.execute("ROLLBACK TO SAVEPOINT unit")
                cursor.execute("RELEASE SAVEPOINT unit")
                outcomes.append((None, failure))
                continue
            if tx.statements > 1 and n < len(sent) - 1:
                # Its rest ran after the later units' first statements, out of order:
                # run the batch again, each unit's statements in turn.
                self._rollback()
                return self._try_batch(batch, durable, careful=careful, ahead=False)
            if savepoints:
                cursor.execute("RELEASE SAVEPOINT unit")
            unit.settled, unit.kinds = tx.settled, None if tx.tasks_changed else tx.kinds
            unit.later = tx.later
            outcomes.append((value, None))
        self.committing = True  # from here a failure leaves the outcome unknown
        if sqlite:
            # At FULL, SQLite syncs what this commit wrote before anyone can read it.
            cursor.execute("COMMIT")
            if durable and self.backend.synchronous == "FULL":
                # A commit that wrote nothing (no new page) is not synced: sync the log
                # for the earlier commits this batch may acknowledge.
                _sync(self.log)
        elif durable:
            conn.commit()
        else:
            # Not flushed: the setting is read at the commit, so it goes with it (one
            # round trip, not two). Sent as text: two statements cannot be prepared.
            cursor.execute("SET LOCAL synchronous_commit = off; COMMIT", prepare=False)
        if durable:
            self.db._flushed()
        return outcomes


class Database:
    def __init__(self, backend: Backend, *, readers: int = 4, writers: int | None = None) -> None:
        self.backend = backend
        self.sql = statements(backend.name)
        #: PostgreSQL: the statement of a flush (``flush``).
        self._flush = Statement(self.sql.flush_log, {}) if self.sql.flush_log else None
        self.on_commit: OnCommit | None = None
        self._units: queue.SimpleQueue[_Unit[Any] | None] = queue.SimpleQueue()
        # One writer, on both backends. SQLite has one write lock anyway. On PostgreSQL
        # several writers of one process took row locks in different orders (a lease
        # renewal against a batch of finishes) and deadlocked: a second's wait for
        # the deadlock detector, the p99 of bench/mcp.py. One writer's batches are
        # larger, and cost less CPU a job (3.6-3.9 -> 2.9-3.2 ms, bench/mcp.py on
        # PostgreSQL). ``writers`` sets another count.
        count = writers if writers is not None else 1
        self._writers = [_Writer(self, n) for n in range(count)]
        #: How many commits were flushed (durable): to observe, e.g. in tests.
        self.flushes = 0
        self._counting = threading.Lock()
        self._writers_started = False
        self._start_lock = threading.Lock()
        self._closed = False
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._reader_slots = threading.BoundedSemaphore(readers)
        self._reader_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=readers, thread_name_prefix="promises-reader"
        )

    # -- writing ---------------------------------------------------------------------

    def writer_pids(self) -> frozenset[int]:
        """PostgreSQL: the server processes of this database's writer connections."""
        if self.backend.name != "postgresql":
            return frozenset()
        pids = set()
        connections = [c for w in self._writers for c in (w.conn, w.quick) if c is not None]
        for conn in connections:
            with contextlib.suppress(Exception):  # read from another thread: may be closed
                pids.add(conn.info.backend_pid)
        return frozenset(pids)

    def _flushed(self) -> None:
        with self._counting:  # several writers may count at once
            self.flushes += 1

    def _submit(self, unit: _Unit[Any]) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed; open it again to use it")
        if threading.current_thread() in self._writers:
            raise InvariantViolation("a write unit tried to write through the store again")
        if not self._writers_started:
            with self._start_lock:
                if not self._writers_started:
                    for writer in self._writers:
                        writer.start()
                    self._writers_started = True
        self._units.put(unit)

    def write(
        self, fn: Callable[[Tx], T], *, durable: bool = True, one_statement: bool = False,
        first: First | None = None,
    ) -> T:  # fmt: skip
        """Run ``fn`` in a write transaction; return once it is committed.
        ``one_statement``: ``fn`` writes with one statement; ``first``: its declared first
        statement (see the module's docstring for both)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def done(value: T | None, error: BaseException | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)  # type: ignore[arg-type]

        self._submit(_Unit(fn, durable, done, one_statement=one_statement, first=first))
        return future.result()

    def flush(self) -> None:
        """Return once every commit made so far is durable: a flushed commit of a unit
        that writes no row (on PostgreSQL it writes a message to the log, since only
        the commit of a transaction that wrote to the log is flushed; SQLite's writer
        syncs the log after any durable batch)."""
        self.write(self._flush_log, one_statement=True, first=self._flush_statement)

    async def aflush(self) -> None:
        """``flush`` for asyncio."""
        await self.awrite(self._flush_log, one_statement=True, first=self._flush_statement)

    def _flush_statement(self) -> Statement | None:
        return self._flush

    def _flush_log(self, tx: Tx) -> None:
        if self._flush is not None:
            tx.scalar(*self._flush)

    async def awrite(
        self, fn: Callable[[Tx], T], *, durable: bool = True, one_statement: bool = False,
        first: First | None = None,
    ) -> T:  # fmt: skip
        """``write`` for asyncio: the event loop waits without blocking."""
        return await self.awrite_future(
            fn, durable=durable, one_statement=one_statement, first=first
        )

    def awrite_future(
        self, fn: Callable[[Tx], T], *, durable: bool = True, one_statement: bool = False,
        first: First | None = None,
    ) -> asyncio.Future[T]:  # fmt: skip
        """``awrite``'s future: a caller stopped while it waits may still hear how the
        write ended (the write goes on regardless)."""
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
            call_soon(loop, settle, value, error)

        try:
            self._submit(_Unit(fn, durable, done, one_statement=one_statement, first=first))
        except PromiseError as exc:  # the store is closed: the future tells it
            future.set_exception(exc)
        return future

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
                _discard(conn)  # it may be broken: never hand it out again
                conn = None
            raise
        finally:
            if conn is not None:
                if self._closed:
                    _discard(conn)
                else:
                    self._idle.put(conn)
            self._reader_slots.release()

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` on a read connection, on this thread. Each statement reads a
        consistent snapshot; use one statement where consistency matters. A pooled
        connection that went bad while idle is replaced once, transparently."""
        for attempt in (1, 2):
            reused = False  # a connect that fails leaves no connection, reused or not
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
                _discard(self._idle.get_nowait())
            except queue.Empty:
                return

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writers_started:
            for _ in self._writers:
                self._units.put(None)
            for writer in self._writers:
                writer.join(timeout=30)
        # Anything submitted while closing: refuse it rather than leave it hanging.
        while True:
            try:
                late = self._units.get_nowait()
            except queue.Empty:
                break
            if late is not None:
                late.done(None, StoreUnavailable("the store is closed; open it again to use it"))
        self._reader_pool.shutdown(wait=False, cancel_futures=True)
        self._drop_idle()


def _ended(conn: Any) -> bool:
    """Whether an idle psycopg connection was ended by the server: it is broken, or
    its socket has something to read (an idle connection is told nothing but its end)."""
    if conn.broken or conn.closed:
        return True
    try:
        fd = conn.pgconn.socket
    except DRIVER_ERRORS:  # it has no socket
        return True
    if not hasattr(select, "poll"):  # Windows: select() has no descriptor limit there
        return bool(select.select([fd], [], [], 0)[0])
    poll = select.poll()  # not select.select: it fails on descriptors past 1023
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))


def _done_in_part(exc: BaseException) -> OutcomeUnknown:
    """A one-statement unit whose first statement committed and whose rest failed, or
    whose answer could not be read."""
    cause = str(exc).strip() or type(exc).__name__
    return OutcomeUnknown(
        f"the write may have been done in whole or in part (then: {cause}); retry with "
        "the same idempotency key to finish it"
    )


def _connection_level(exc: BaseException) -> bool:
    """A driver error that ends the transaction (connection lost, database locked
    beyond the busy timeout), as opposed to one statement's refusal."""
    error = translate(exc)
    return isinstance(error, StoreUnavailable)
