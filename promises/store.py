"""The durable promise store: its contract (``PromiseStore``) and its SQL implementation.

Open one with ``promises.open_store(url)``. The same ``SqlStore`` runs on SQLite
(the embedded default) and PostgreSQL.

Atomicity comes from the database. A fresh create is one ``INSERT … ON CONFLICT DO
NOTHING``; a fresh settle is one ``UPDATE … WHERE state = 'pending' AND timeout_at >
now``. Only when those touch nothing does the store read the row — under the write
lock (``BEGIN IMMEDIATE`` on SQLite, ``SELECT … FOR UPDATE`` on PostgreSQL) — and
apply the rules in ``transitions.py`` to tell a permitted duplicate from a refusal.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Protocol

import anyio.to_thread
from sqlalchemy import Connection, and_, bindparam, case, delete, select, text, update
from sqlalchemy.exc import DBAPIError

from promises.backends import Backend, open_backend
from promises.errors import (
    InvalidArgument,
    InvariantViolation,
    PromiseError,
    PromiseNotFound,
    StoreUnavailable,
)
from promises.records import (
    TIMER_TAG,
    Promise,
    SearchPage,
    SearchState,
    Transition,
    Value,
    effective,
)
from promises.schema import IMMUTABLE_MESSAGE, metadata, promises_table, tags_table
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
    check_search,
    check_strict,
    check_tags,
    check_timestamp,
    check_value,
    dumps_mapping,
    loads_mapping,
)
from promises.waiting import Notifier

DEFAULT_LIMITS = Limits()

#: Milliseconds since the epoch. Inject another to simulate time.
Clock = Callable[[], int]


def system_clock() -> int:
    return time.time_ns() // 1_000_000


class PromiseStore(Protocol):
    """Durable promises: records with identity and state that outlive any process.

    Thread-safety: every method may be called from any thread; the blocking methods
    do I/O on the calling thread, so async code runs them in a worker thread
    (``anyio.to_thread.run_sync``). ``wait`` is the one coroutine, for asyncio.

    Atomicity: each create/resolve/reject/cancel is one database transaction. It
    either makes a *fresh* transition (``Transition.fresh``), or finds a permitted
    duplicate of an earlier call and changes nothing (``fresh`` false), or raises and
    changes nothing. A returned transition is durable (committed; on SQLite with the
    default ``synchronous=FULL``, fsynced).

    Timeouts: a pending promise whose ``timeout_at`` has passed is settled —
    ``rejected_timedout``, or ``resolved`` for a timer (tag ``promises:timer``) — as
    of its timeout. Reads apply this without writing; writes persist it; ``sweep``
    persists it in bulk.

    Retention: ``collect`` deletes settled promises older than the retention age.
    Idempotence lasts only as long as the record: after collection a create with the
    old key makes a *new* promise, and a settle of the old id is *not found*.
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

    async def wait(self, id: str, *, timeout: float) -> Promise: ...

    def close(self) -> None: ...


REJECTED_STATES = ("rejected", "rejected_canceled", "rejected_timedout")

_p = promises_table
_SETTLE = (
    update(_p)
    .where(
        _p.c.id == bindparam("b_id"), _p.c.state == "pending", _p.c.timeout_at > bindparam("b_now")
    )
    .values(
        state=bindparam("b_state"),
        value_headers=bindparam("b_headers"),
        value_data=bindparam("b_data"),
        ikey_settle=bindparam("b_ikey"),
        # max(now, created_at): another process's clock may run a little behind ours.
        settled_at=case(
            (_p.c.created_at > bindparam("b_now"), _p.c.created_at), else_=bindparam("b_now")
        ),
    )
    .returning(*_p.c)
)
_PERSIST_TIMEOUT = (
    update(_p)
    .where(_p.c.id == bindparam("b_id"), _p.c.state == "pending")
    .values(state=bindparam("b_state"), settled_at=bindparam("b_settled_at"))
)
_GET = select(_p).where(_p.c.id == bindparam("b_id"))
_GET_FOR_UPDATE = _GET.with_for_update()
_ANY_EXPIRED = (
    select(_p.c.seq).where(_p.c.state == "pending", _p.c.timeout_at <= bindparam("b_now")).limit(1)
)


def _promise_from_row(row: Any) -> Promise:
    # Positional unpacking in the table's column order: attribute access on SQLAlchemy
    # rows costs more than everything else here, and search builds a page of these.
    (_seq, id, state, _timer, param_headers, param_data, value_headers, value_data,
     timeout_at, tags, ikey_create, ikey_settle, created_at, settled_at) = row  # fmt: skip
    return Promise(
        id=id,
        state=state,
        param=Value(param_data, loads_mapping(param_headers)),
        value=Value(value_data, loads_mapping(value_headers)),
        timeout_at=timeout_at,
        tags=loads_mapping(tags),
        ikey_create=ikey_create,
        ikey_settle=ikey_settle,
        created_at=created_at,
        settled_at=settled_at,
    )


_COLUMNS = [c.name for c in _p.c]
if _COLUMNS != ["seq", "id", "state", "timer", "param_headers", "param_data", "value_headers",
                "value_data", "timeout_at", "tags", "ikey_create", "ikey_settle", "created_at",
                "settled_at"]:  # fmt: skip
    raise InvariantViolation(
        f"promises table columns changed ({_COLUMNS}); update _promise_from_row"
    )


def _query_digest(pattern: str, state: str | None, tags: Mapping[str, str]) -> str:
    material = json.dumps([pattern, state, sorted(tags.items())])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _encode_cursor(seq: int, digest: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": seq, "q": digest}).encode()).decode()


def _decode_cursor(cursor: object, digest: str) -> int | None:
    if cursor is None:
        return None
    try:
        if not isinstance(cursor, str):
            raise TypeError
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        seq, query = data["s"], data["q"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise TypeError
    except Exception as exc:
        raise InvalidArgument(
            "cursor is not one this store handed out; pass the cursor from the previous "
            "page's result unchanged, or None for the first page"
        ) from exc
    if query != digest:
        raise InvalidArgument(
            "cursor belongs to a search with other filters; use it only with the same "
            "id pattern, state and tags, or pass None to start over"
        )
    return seq


#: Called inside the transaction that settles promises (fresh settles, persisted
#: timeouts, sweeps) with the connection, the settled ids and the time. The runtime
#: uses it to wake the tasks waiting on them, atomically with the settle.
SettleHook = Callable[[Connection, list[str], int], None]

_NOTIFY = "promises.notify"


class SqlStore:
    """``PromiseStore`` on SQLite or PostgreSQL. Create it with ``open_store``.

    Besides the ``PromiseStore`` methods, ``transaction()`` with ``create_in`` and
    ``settle_in`` let code in this package (the runtime) put promise transitions and
    its own rows in one atomic transaction.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock = system_clock,
        limits: Limits = DEFAULT_LIMITS,
        poll_interval: float = 0.2,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.limits = limits
        self.poll_interval = poll_interval
        self.retention = retention
        self.notifier = Notifier()
        self.settle_hooks: list[SettleHook] = []
        self._insert = (
            backend.insert(_p).on_conflict_do_nothing(index_elements=["id"]).returning(_p.c.seq)
        )

    # -- transactions ---------------------------------------------------------------

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Connection]:
        """A write transaction. Waiters on the promises it settled wake after it
        commits. Driver errors leave as ``PromiseError``s.

        ``durable=False`` commits without flushing to disk (the runtime's internal
        checkpoints): still atomic and ordered, and durable with the next flushed
        commit, but a power loss may lose it. Never use it for a transition a caller
        outside is told about."""
        engine = self.backend.write_engine if durable else self.backend.lazy_write_engine
        try:
            with engine.begin() as conn:
                yield conn
                settled: list[str] = conn.info.pop(_NOTIFY, [])
        except (DBAPIError, sqlite3.Error) as exc:  # sqlite3's own: from the BEGIN we emit
            raise _translate(exc) from exc
        self.notifier.notify(settled)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.backend.engine.connect() as conn:
                yield conn
        except (DBAPIError, sqlite3.Error) as exc:
            raise _translate(exc) from exc

    @staticmethod
    def notify_after_commit(conn: Connection, keys: list[str]) -> None:
        """Wake this process's waiters on ``keys`` once ``conn``'s transaction commits."""
        conn.info.setdefault(_NOTIFY, []).extend(keys)

    def _settled(self, conn: Connection, ids: list[str], now: int) -> None:
        """Bookkeeping for promises this transaction settled."""
        if not ids:
            return
        self.notify_after_commit(conn, ids)
        for hook in self.settle_hooks:
            hook(conn, ids, now)

    # -- create -------------------------------------------------------------------

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
        with self.transaction() as conn:
            return self.create_in(
                conn, id, timeout_at=timeout_at, param=param, tags=tags, ikey=ikey, strict=strict
            )

    def create_in(
        self,
        conn: Connection,
        id: str,
        *,
        timeout_at: int,
        param: Value | None = None,
        tags: Mapping[str, str] | None = None,
        ikey: str | None = None,
        strict: bool = False,
    ) -> Transition:
        """``create`` inside the caller's ``transaction()``. A refusal raises, which
        rolls back the caller's whole transaction."""
        check_id(id)
        check_timestamp(timeout_at, "timeout_at")
        param = check_value(param, "param", self.limits)
        checked_tags = check_tags(tags, creating=True)
        ikey = check_ikey(ikey)
        strict = check_strict(strict)
        now = self.clock()
        row = {
            "id": id,
            "state": "pending",
            "timer": checked_tags.get(TIMER_TAG) == "true",
            "param_headers": dumps_mapping(param.headers),
            "param_data": param.data,
            "value_headers": None,
            "value_data": None,
            "timeout_at": timeout_at,
            "tags": dumps_mapping(checked_tags),
            "ikey_create": ikey,
            "ikey_settle": None,
            "created_at": now,
            "settled_at": None,
        }
        # On PostgreSQL (READ COMMITTED) a row deleted by retention between our insert
        # and our read makes us insert again; under SQLite's write lock it cannot happen.
        for _ in range(3):
            seq = conn.execute(self._insert, row).scalar()
            if seq is not None:
                if checked_tags:
                    conn.execute(
                        tags_table.insert(),
                        [{"seq": seq, "key": k, "value": v} for k, v in checked_tags.items()],
                    )
                fresh = Promise(
                    id=id, state="pending", param=param, value=Value(), timeout_at=timeout_at,
                    tags=checked_tags, ikey_create=ikey, ikey_settle=None, created_at=now,
                    settled_at=None,
                )  # fmt: skip
                return Transition(effective(fresh, now), fresh=True)
            existing = conn.execute(_GET_FOR_UPDATE, {"b_id": id}).first()
            if existing is not None:
                current = self._apply_timeout(conn, _promise_from_row(existing), now)
                check_duplicate_create(current, ikey, strict)
                return Transition(current, fresh=False)
        raise StoreUnavailable(f"promise {id!r} kept changing while being created; try again")

    # -- settle -------------------------------------------------------------------

    def resolve(
        self, id: str, *, value: Value | None = None, ikey: str | None = None, strict: bool = False
    ) -> Transition:
        with self.transaction() as conn:
            return self.settle_in(conn, id, "resolve", value=value, ikey=ikey, strict=strict)

    def reject(
        self, id: str, *, value: Value | None = None, ikey: str | None = None, strict: bool = False
    ) -> Transition:
        with self.transaction() as conn:
            return self.settle_in(conn, id, "reject", value=value, ikey=ikey, strict=strict)

    def cancel(
        self, id: str, *, value: Value | None = None, ikey: str | None = None, strict: bool = False
    ) -> Transition:
        with self.transaction() as conn:
            return self.settle_in(conn, id, "cancel", value=value, ikey=ikey, strict=strict)

    def settle_in(
        self,
        conn: Connection,
        id: str,
        action: SettleAction,
        *,
        value: Value | None = None,
        ikey: str | None = None,
        strict: bool = False,
    ) -> Transition:
        """Resolve, reject or cancel inside the caller's ``transaction()``."""
        check_id(id)
        value = check_value(value, "value", self.limits)
        ikey = check_ikey(ikey)
        strict = check_strict(strict)
        now = self.clock()
        params = {
            "b_id": id,
            "b_now": now,
            "b_state": SETTLED_BY[action],
            "b_headers": dumps_mapping(value.headers),
            "b_data": value.data,
            "b_ikey": ikey,
        }
        row = conn.execute(_SETTLE, params).first()
        if row is None:
            existing = conn.execute(_GET_FOR_UPDATE, {"b_id": id}).first()
            if existing is None:
                raise PromiseNotFound(id)
            current = self._apply_timeout(conn, _promise_from_row(existing), now)
            if not current.pending:
                check_duplicate_settle(current, action, ikey, strict)
                return Transition(current, fresh=False)
            # Created by another transaction between our two statements; we hold its
            # row lock now, so this settle is the fresh one.
            row = conn.execute(_SETTLE, params).first()
            if row is None:
                raise InvariantViolation(f"pending promise {id!r} could not be settled")
        settled = _promise_from_row(row)
        if settled.state != SETTLED_BY[action] or settled.value.data != value.data:
            raise InvariantViolation(
                f"promise {id!r} was written as {settled.state}, "
                f"but the store was asked to {action} it"
            )
        self._settled(conn, [id], now)
        return Transition(settled, fresh=True)

    def _apply_timeout(self, conn: Connection, current: Promise, now: int) -> Promise:
        """Persist the timeout of an expired pending promise we hold locked."""
        expired = effective(current, now)
        if expired is not current:
            conn.execute(
                _PERSIST_TIMEOUT,
                {"b_id": current.id, "b_state": expired.state, "b_settled_at": expired.settled_at},
            )
            self._settled(conn, [current.id], now)
        return expired

    # -- reads --------------------------------------------------------------------

    def get(self, id: str) -> Promise:
        check_id(id)
        with self.read() as conn:
            row = conn.execute(_GET, {"b_id": id}).first()
        if row is None:
            raise PromiseNotFound(id)
        return effective(_promise_from_row(row), self.clock())

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
        pattern, state, limit = check_search(id, state, limit)
        checked_tags = check_tags(tags, creating=False)
        digest = _query_digest(pattern, state, checked_tags)
        after = _decode_cursor(cursor, digest)
        now = self.clock()
        if state in ("resolved", "rejected"):
            # Settled-state filters must see promises whose timeout has passed.
            self._sweep_if_needed(now)

        stmt = select(_p)
        # With tags, order by the first tag row's seq (equal to the promise's): the
        # database then walks the (key, value, seq) index backwards and stops at a
        # page, instead of sorting every match.
        order_seq = _p.c.seq
        for i, (key, value) in enumerate(sorted(checked_tags.items())):
            t = tags_table.alias(f"t{i}")
            matches = [t.c.seq == _p.c.seq, t.c.key == key]
            if value != "*":  # "*" matches any value of the tag
                matches.append(t.c.value == value)
            stmt = stmt.join(t, and_(*matches))
            if i == 0:
                order_seq = t.c.seq
        conditions: list[Any] = []
        if pattern != "*":
            conditions.append(self.backend.id_pattern(_p.c.id, pattern))
        if state == "pending":
            conditions += [_p.c.state == "pending", _p.c.timeout_at > now]
        elif state == "resolved":
            conditions.append(_p.c.state == "resolved")
        elif state == "rejected":
            conditions.append(_p.c.state.in_(REJECTED_STATES))
        if after is not None:
            conditions.append(order_seq < after)
        stmt = stmt.where(*conditions).order_by(order_seq.desc()).limit(limit + 1)

        with self.read() as conn:
            rows = conn.execute(stmt).all()
        page = rows[:limit]
        next_cursor = _encode_cursor(page[-1][0], digest) if len(rows) > limit else None
        return SearchPage([effective(_promise_from_row(r), now) for r in page], next_cursor)

    # -- upkeep -------------------------------------------------------------------

    def sweep(self, now: int | None = None, *, batch: int = 500) -> int:
        """Persist the timeout of every pending promise expired at ``now``; returns how many."""
        now = self.clock() if now is None else check_timestamp(now, "now")
        candidates = (
            select(_p.c.seq)
            .where(_p.c.state == "pending", _p.c.timeout_at <= now)
            .order_by(_p.c.timeout_at)
            .limit(batch)
            .scalar_subquery()
        )
        stmt = (
            update(_p)
            .where(_p.c.seq.in_(candidates), _p.c.state == "pending")
            .values(
                state=case((_p.c.timer, "resolved"), else_="rejected_timedout"),
                settled_at=case(
                    (_p.c.created_at > _p.c.timeout_at, _p.c.created_at), else_=_p.c.timeout_at
                ),
            )
            .returning(_p.c.id)
        )
        total = 0
        while True:
            # Not flushed on its own: a timeout is re-derived from timeout_at if lost.
            with self.transaction(durable=False) as conn:
                ids = list(conn.execute(stmt).scalars())
                self._settled(conn, ids, now)
            total += len(ids)
            if len(ids) < batch:
                return total

    def _sweep_if_needed(self, now: int) -> None:
        with self.read() as conn:
            any_expired = conn.execute(_ANY_EXPIRED, {"b_now": now}).first() is not None
        if any_expired:
            self.sweep(now)

    def collect(self, max_age: timedelta | None = None, *, batch: int = 1000) -> int:
        """Delete promises settled more than ``max_age`` (default: the store's retention)
        ago. Their idempotency keys are forgotten with them; returns how many went."""
        age = self.retention if max_age is None else max_age
        if age < timedelta(0):
            raise InvalidArgument(f"max_age must not be negative, got {age}")
        now = self.clock()
        self.sweep(now)
        cutoff = now - int(age.total_seconds() * 1000)
        old = select(_p.c.seq).where(_p.c.settled_at < cutoff).limit(batch).scalar_subquery()
        stmt = delete(_p).where(_p.c.seq.in_(old), _p.c.state != "pending")
        total = 0
        while True:
            with self.transaction(durable=False) as conn:
                count = conn.execute(stmt).rowcount
            total += count
            if count < batch:
                return total

    # -- waiting ------------------------------------------------------------------

    async def wait(self, id: str, *, timeout: float) -> Promise:
        """Wait until promise ``id`` is settled, or ``timeout`` seconds pass; return it
        as it is then (check ``.pending``). Wakes at once for a settle made in this
        process, within ``poll_interval`` for one made in another, and at the promise's
        own timeout. Raises ``PromiseNotFound`` for an unknown id. asyncio only."""
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise InvalidArgument(f"timeout must be a number of seconds >= 0, got {timeout!r:.40}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.notifier.listen(id) as settled:
            while True:
                settled.clear()
                promise = await anyio.to_thread.run_sync(self.get, id)
                remaining = deadline - loop.time()
                if not promise.pending or remaining <= 0:
                    return promise
                until_timeout = max(promise.timeout_at - self.clock(), 0) / 1000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        settled.wait(), min(remaining, self.poll_interval, until_timeout + 0.001)
                    )

    def close(self) -> None:
        self.backend.engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _translate(exc: DBAPIError | sqlite3.Error) -> PromiseError:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    message = str(orig) if orig is not None else str(exc)
    if IMMUTABLE_MESSAGE in message:
        return InvariantViolation(IMMUTABLE_MESSAGE)
    return StoreUnavailable(
        f"the database could not complete the operation ({message}); nothing was changed, "
        "it is safe to retry"
    )


def open_store(
    url: str,
    *,
    clock: Clock = system_clock,
    max_payload_bytes: int = Limits.max_payload_bytes,
    poll_interval: float = 0.2,
    retention: timedelta = timedelta(days=7),
) -> SqlStore:
    """Open (creating its tables if needed) the store at ``url``:
    ``sqlite:///path/file.db`` (add ``?synchronous=NORMAL`` to trade the last commits
    on power loss for speed) or ``postgresql+psycopg://user@host/dbname``."""
    backend = open_backend(url)
    try:
        with backend.write_engine.begin() as conn:
            if backend.name == "postgresql":
                # Serialize concurrent first opens: CREATE TABLE IF NOT EXISTS can race.
                conn.execute(text("SELECT pg_advisory_xact_lock(7243901)"))
            metadata.create_all(conn)
    except DBAPIError as exc:
        backend.engine.dispose()
        raise StoreUnavailable(f"cannot open the store at {url!r}: {exc.orig}") from exc
    return SqlStore(
        backend,
        clock=clock,
        limits=Limits(max_payload_bytes=max_payload_bytes),
        poll_interval=poll_interval,
        retention=retention,
    )


__all__ = ["Clock", "PromiseStore", "SqlStore", "open_store", "system_clock"]
