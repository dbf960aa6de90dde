"""Engines for the two backends, and the few statements that differ between them.

SQLite is the embedded default; every setting lives in ``_sqlite_pragmas`` with its
reason. PostgreSQL is for several machines sharing the work; the same schema and
statements run on it through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from promises.errors import InvalidArgument

Synchronous = Literal["FULL", "NORMAL"]


def _sqlite_pragmas(synchronous: Synchronous, busy_timeout_ms: int = 30_000) -> list[str]:
    return [
        # Readers never block the writer and the writer never blocks readers.
        "PRAGMA journal_mode=WAL",
        # FULL fsyncs the WAL at every commit: an acknowledged write survives power loss.
        # NORMAL is faster and still never corrupts, but may lose the last commits on
        # power loss (not on a process crash). Choose it with ?synchronous=NORMAL.
        f"PRAGMA synchronous={synchronous}",
        # Several processes share one file: wait for the write lock instead of failing
        # (?busy_timeout=ms; SQLite's lock is not fair, so keep this generous).
        f"PRAGMA busy_timeout={busy_timeout_ms}",
        # promise_tags rows go with their promise.
        "PRAGMA foreign_keys=ON",
        # Temporary b-trees (sorts) in memory.
        "PRAGMA temp_store=MEMORY",
        # A 64 MiB page cache per connection (the default is ~8 MiB): searches over a
        # large store touch many pages.
        "PRAGMA cache_size=-65536",
    ]


@dataclass(frozen=True)
class Backend:
    """An engine plus what differs per dialect."""

    name: Literal["sqlite", "postgresql"]
    engine: Engine
    #: Runs single-statement reads (on SQLite, outside any transaction).
    #: ``write_engine`` is the same pool, but a transaction begun on it takes the write lock at once
    #: (``BEGIN IMMEDIATE`` on SQLite), so a read-then-write never needs an upgrade
    #: that could fail with "database is locked".
    write_engine: Engine
    #: Like ``write_engine``, but its commits are not flushed to disk one by one:
    #: ``synchronous=NORMAL`` on SQLite, ``synchronous_commit=off`` on PostgreSQL. Both
    #: keep commit order, so the next flushed commit makes these durable too; a power
    #: loss (not a process crash) may lose the ones since the last flush.
    lazy_write_engine: Engine
    insert: Callable[[Any], Any]
    id_pattern: Callable[[Any, str], ColumnElement[bool]]


def _sqlite_glob(column: Any, pattern: str) -> ColumnElement[bool]:
    # GLOB is case-sensitive and uses the id index for a literal prefix. Only '*' is a
    # wildcard for callers, so the other GLOB metacharacters are escaped as classes.
    escaped = "".join(f"[{c}]" if c in "[]?" else c for c in pattern)
    result: ColumnElement[bool] = column.op("GLOB")(escaped)
    return result


def _postgres_like(column: Any, pattern: str) -> ColumnElement[bool]:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    result: ColumnElement[bool] = column.like(escaped.replace("*", "%"), escape="\\")
    return result


def open_backend(url: str) -> Backend:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InvalidArgument(
            f"cannot parse database url {url!r}; use sqlite:///path/to/file.db "
            "or postgresql+psycopg://user@host/dbname"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        return _open_sqlite(parsed)
    if parsed.get_backend_name() == "postgresql":
        return _open_postgres(parsed)
    raise InvalidArgument(
        f"unsupported database {parsed.get_backend_name()!r} in {url!r}; "
        "use sqlite:///path/to/file.db or postgresql+psycopg://user@host/dbname"
    )


def _open_sqlite(parsed: Any) -> Backend:
    query = dict(parsed.query)
    synchronous = str(query.pop("synchronous", "FULL")).upper()
    busy = str(query.pop("busy_timeout", "30000"))
    if not busy.isdigit():
        raise InvalidArgument(f"busy_timeout={busy!r} must be a number of milliseconds")
    if synchronous not in ("FULL", "NORMAL"):
        raise InvalidArgument(f"synchronous={synchronous!r} is not allowed; use FULL or NORMAL")
    if not parsed.database or parsed.database == ":memory:":
        raise InvalidArgument(
            "the store needs a SQLite file (sqlite:///path/to/file.db), not an in-memory "
            "database: promises must outlive the process"
        )
    engine = create_engine(
        parsed.set(query=query),
        pool_size=8,
        max_overflow=56,
        connect_args={"check_same_thread": False, "timeout": int(busy) / 1000},
    )
    pragmas = _sqlite_pragmas(synchronous, int(busy))  # type: ignore[arg-type]

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below) instead of the sqlite3 module's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Straight to the driver: this runs on every transaction, and SQLAlchemy's own
        # execute path would cost more than the BEGIN. A read of one statement needs no
        # transaction at all (``sqlite_begin`` unset): SQLite reads a consistent snapshot.
        options = connection.get_execution_options()
        mode = options.get("sqlite_begin")
        if mode is None:
            return
        driver = connection.connection.driver_connection
        wanted = options.get("sqlite_synchronous", synchronous)
        info = connection.connection.info
        if info.get("synchronous", synchronous) != wanted:
            driver.execute(f"PRAGMA synchronous={wanted}")  # only outside a transaction
            info["synchronous"] = wanted
        driver.execute(f"BEGIN {mode}")

    write = engine.execution_options(sqlite_begin="IMMEDIATE")
    return Backend(
        name="sqlite",
        engine=engine,
        write_engine=write,
        lazy_write_engine=write.execution_options(sqlite_synchronous="NORMAL"),
        insert=sqlite.insert,
        id_pattern=_sqlite_glob,
    )


def _open_postgres(parsed: Any) -> Backend:
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed, pool_size=8, max_overflow=24, pool_pre_ping=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("lazy_commit"):
            connection.connection.driver_connection.execute("SET LOCAL synchronous_commit = off")

    return Backend(
        name="postgresql",
        engine=engine,
        write_engine=engine,
        lazy_write_engine=engine.execution_options(lazy_commit=True),
        insert=postgresql.insert,
        id_pattern=_postgres_like,
    )
