"""The two backends: how to connect, the settings each connection gets, and how driver
errors become the store's errors.

SQLite is the embedded default; every setting lives in ``_sqlite_pragmas`` with its
reason. PostgreSQL is for several machines sharing the work. The store talks to both
through their DB-API drivers (``sqlite3``, ``psycopg``) with the statements in
``promises.sql``; SQLAlchemy is used for migrations only.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from promises.errors import (
    InvalidArgument,
    InvariantViolation,
    PromiseError,
    StoreMisconfigured,
    StoreUnavailable,
)
from promises.schema import IMMUTABLE_MESSAGE

Synchronous = Literal["FULL", "NORMAL"]
Dialect = Literal["sqlite", "postgresql"]

try:  # psycopg is a dependency, but SQLite-only installs may go without its binary part
    import psycopg
except ImportError:  # pragma: no cover
    psycopg = None  # type: ignore[assignment]

#: Every error the drivers raise, for the one place that translates them.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error,) + (
    (psycopg.Error,) if psycopg is not None else ()
)


def _sqlite_pragmas(synchronous: Synchronous, busy_timeout_ms: int) -> list[str]:
    return [
        # Several processes share one file: wait for the write lock instead of failing
        # (?busy_timeout=ms; SQLite's lock is not fair, so keep this generous).
        f"PRAGMA busy_timeout={busy_timeout_ms}",
        # FULL fsyncs the WAL at every commit: an acknowledged write survives power loss.
        # NORMAL is faster and still never corrupts, but may lose the last commits on
        # power loss (not on a process crash). Choose it with ?synchronous=NORMAL.
        f"PRAGMA synchronous={synchronous}",
        # promise_tags and tasks rows go with their promise.
        "PRAGMA foreign_keys=ON",
        # Temporary b-trees (sorts) in memory.
        "PRAGMA temp_store=MEMORY",
        # A 64 MiB page cache per connection (the default is ~8 MiB): searches over a
        # large store touch many pages.
        "PRAGMA cache_size=-65536",
    ]


@dataclass(frozen=True)
class Backend:
    """Where the store lives and how to open connections to it."""

    name: Dialect
    url: URL
    #: For migrations (SQLAlchemy + alembic); no pooled connections are kept.
    engine: Engine
    #: Opens a new DB-API connection: ``role`` names it (``writer``, ``reader``, ``listen``);
    #: only the writer's is transactional (PostgreSQL autocommit is off), unless
    #: ``transactional`` says otherwise.
    connect: Callable[..., Any]
    #: SQLite: the file, and the synchronous setting commits get by default.
    path: Path | None = None
    synchronous: Synchronous = "FULL"
    #: PostgreSQL: the application_name prefix of this store's connections.
    application_name: str = "promises"


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


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (job arguments, results and
    approval context are private); SQLite gives its -wal and -shm files the same mode."""
    if not path.parent.is_dir():
        raise InvalidArgument(
            f"cannot create the database {str(path)!r}: the directory {str(path.parent)!r} "
            "does not exist"
        )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the database {str(path)!r}: {exc}") from exc
    os.close(fd)


def _set_wal(conn: sqlite3.Connection, busy_ms: int) -> None:
    """Switch a new database to WAL. Several processes opening a brand-new file at the
    same instant race for this; the loser is told "database is locked" without its busy
    handler being called, so wait here as the busy timeout would."""
    deadline = time.monotonic() + busy_ms / 1000
    pause = 0.001
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode not in ("wal", "memory"):
                mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
            if mode == "wal":
                return
            if mode == "memory" or time.monotonic() > deadline:
                # An in-memory database (a file: URI with mode=memory) never takes WAL.
                raise InvalidArgument(
                    f"the store needs a SQLite file it can keep a write-ahead log for; "
                    f"this database's journal stays {mode!r} (an in-memory database?): "
                    "use a file on a local disk, e.g. sqlite:///path/to/file.db"
                )
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _open_sqlite(parsed: URL) -> Backend:
    query = dict(parsed.query)
    synchronous = str(query.pop("synchronous", "FULL")).upper()
    busy = str(query.pop("busy_timeout", "30000"))
    if not busy.isdigit():
        raise InvalidArgument(f"busy_timeout={busy!r} must be a number of milliseconds")
    if synchronous not in ("FULL", "NORMAL"):
        raise InvalidArgument(f"synchronous={synchronous!r} is not allowed; use FULL or NORMAL")
    if query:
        raise InvalidArgument(
            f"unknown SQLite option(s) {', '.join(sorted(query))}; "
            "allowed: synchronous=FULL|NORMAL, busy_timeout=ms"
        )
    if not parsed.database or parsed.database == ":memory:":
        raise InvalidArgument(
            "the store needs a SQLite file (sqlite:///path/to/file.db), not an in-memory "
            "database: promises must outlive the process"
        )
    if parsed.database.startswith("file:"):
        # sqlite3 would read it as a URI (mode=memory and all), not as the file's name.
        raise InvalidArgument(
            f"the store takes a path to a SQLite file (sqlite:///path/to/file.db), not a "
            f"SQLite URI ({parsed.database!r:.60})"
        )
    path = Path(parsed.database).expanduser()
    busy_ms = int(busy)
    pragmas = _sqlite_pragmas(synchronous, busy_ms)  # type: ignore[arg-type]

    def connect(role: str = "reader", *, transactional: bool | None = None) -> sqlite3.Connection:
        _create_private(path)
        # isolation_level=None: we issue BEGIN ourselves (IMMEDIATE for writers), and a
        # read of one statement needs no transaction (it reads a consistent snapshot).
        conn = sqlite3.connect(
            str(path),
            timeout=busy_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=512,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout={busy_ms}")
            _set_wal(conn, busy_ms)
            for pragma in pragmas:
                conn.execute(pragma)
        except BaseException:
            conn.close()
            raise
        return conn

    engine = create_engine(
        parsed.set(query={}), poolclass=NullPool, connect_args={"check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's
        dbapi_connection.execute(f"PRAGMA busy_timeout={busy_ms}")
        _set_wal(dbapi_connection, busy_ms)
        for pragma in pragmas:
            dbapi_connection.execute(pragma)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Migrations take the write lock at once: two processes upgrading the same file
        # wait for each other instead of failing halfway.
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE")

    return Backend(
        name="sqlite",
        url=parsed,
        engine=engine,
        connect=connect,
        path=path,
        synchronous=synchronous,  # type: ignore[arg-type]
    )


def _open_postgres(parsed: URL) -> Backend:
    if psycopg is None:  # pragma: no cover
        raise InvalidArgument("PostgreSQL needs psycopg: pip install 'psycopg[binary]'")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    query = dict(parsed.query)
    prefix = str(query.pop("application_name", "promises"))
    conninfo = parsed.set(drivername="postgresql", query=query).render_as_string(
        hide_password=False
    )

    def connect(role: str = "reader", *, transactional: bool | None = None) -> Any:
        if transactional is None:
            transactional = role == "writer"
        conn = psycopg.connect(
            conninfo,
            application_name=f"{prefix}:{role}"[:63],
            autocommit=not transactional,
            connect_timeout=10,
            prepare_threshold=None if role == "listen" else 0,
        )
        return conn

    engine = create_engine(
        parsed.set(query={**query, "application_name": f"{prefix}:migrate"}), poolclass=NullPool
    )
    return Backend(
        name="postgresql", url=parsed, engine=engine, connect=connect, application_name=prefix
    )


_TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57014",  # query_canceled (statement timeout)
    "53300",  # too_many_connections
}


#: The FATAL refusals of a connection that pass (the server is starting or stopping, or
#: has no connection slot free); any other (no such role or database, a wrong password)
#: needs the URL fixed.
_PASSING_FATAL = ("starting up", "shutting down", "recovery", "too many", "connection slots")

#: SQLite errors that pass: another process holds the lock, the disk is busy or full.
_TRANSIENT_SQLITE = ("locked", "busy", "disk", "unable to open", "interrupted", "out of memory")


def translate(exc: BaseException) -> PromiseError:
    """The store's error for a driver error: ``StoreUnavailable`` (nothing changed, safe
    to retry) for what is transient; ``InvariantViolation`` for what is a broken rule
    or a bug, so that it is never retried in a loop."""
    if isinstance(exc, PromiseError):
        return exc
    message = str(exc).strip() or type(exc).__name__
    if IMMUTABLE_MESSAGE in message:
        return InvariantViolation(IMMUTABLE_MESSAGE)
    transient = isinstance(exc, ConnectionError | TimeoutError) or (
        isinstance(exc, sqlite3.OperationalError)
        and any(word in message.lower() for word in _TRANSIENT_SQLITE)
    )
    if psycopg is not None and isinstance(exc, psycopg.Error):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate[:2] in ("22", "54"):  # data exception, program limit exceeded
            # The value itself is refused (too large for an index, out of range): the
            # same call fails again, so it is never "safe to retry".
            return InvalidArgument(f"the database refused a value: {message}")
        # A refused connection comes without a SQLSTATE; the server's FATAL says why.
        fatal = not sqlstate and "FATAL:" in message
        if (
            sqlstate[:2] == "28"
            or sqlstate == "3D000"
            or (fatal and not any(word in message for word in _PASSING_FATAL))
        ):
            return StoreMisconfigured(
                f"the database refused the connection ({message}); check the database URL: "
                "its user, password and database name"
            )
        transient = (
            isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            or sqlstate in _TRANSIENT_SQLSTATES
            or sqlstate.startswith("08")  # connection exceptions
            or sqlstate.startswith("57P")  # admin shutdown, crash shutdown
        )
    if transient:
        return StoreUnavailable(
            f"the database could not complete the operation ({message}); nothing was "
            "changed, it is safe to retry"
        )
    return InvariantViolation(f"the database refused an operation the store made: {message}")
