"""Bring a database to the schema this code needs, on first open.

* A new, empty database gets the current tables at once and is stamped at ``HEAD``.
* A database at an older revision is upgraded in place by alembic (the scripts in
  ``promises/migrations/versions``). One made before migrations existed (0.1, no
  ``alembic_version`` table) is taken to be at revision 0001.
* Several processes may open the same database at the same time: the check runs under
  SQLite's write lock (``BEGIN IMMEDIATE``) or a PostgreSQL advisory lock, so one
  upgrades and the others find it done.
* A database newer than this code is refused with a clear error: old code must not
  write rows it does not understand.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, inspect, text

from promises.backends import Backend
from promises.errors import InvalidArgument
from promises.schema import HEAD, POSTGRES_DDL, SQLITE_DDL, metadata

_LOCK = 7243901  # the advisory lock that serialises migrations on PostgreSQL
_KNOWN = ("0001", "0002", "0003")


def current_revision(conn: Connection) -> str | None:
    """The database's revision: None for an empty one."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if version is not None:
            return str(version)
    return "0001" if "promises" in tables else None


def migrate(backend: Backend) -> str:
    """Upgrade the database to ``HEAD``; returns the revision it was at."""
    if _at_head(backend):
        return HEAD
    with backend.engine.begin() as conn:
        if backend.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
        found = current_revision(conn)
        if found == HEAD:
            return HEAD
        if found is not None and found not in _KNOWN:
            raise InvalidArgument(
                f"the database is at schema revision {found!r}, newer than this version of "
                f"agent-tools knows (up to {HEAD!r}); upgrade agent-tools to open it"
            )
        if found is None:
            _create(conn, backend)
        else:
            _upgrade(conn, found)
        return found or "new"


def _at_head(backend: Backend) -> bool:
    """The quick check every open makes: read the stamp, take no lock."""
    conn = backend.connect("reader")
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT version_num FROM alembic_version")
        row = cursor.fetchone()
        return row is not None and row[0] == HEAD
    except Exception:  # no such table yet, or a database we cannot read: migrate decides
        return False
    finally:
        conn.close()


def _create(conn: Connection, backend: Backend) -> None:
    metadata.create_all(conn)
    for statement in SQLITE_DDL if backend.name == "sqlite" else POSTGRES_DDL:
        conn.execute(text(statement))
    conn.execute(
        text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    )
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": HEAD})


def _upgrade(conn: Connection, found: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = conn
    if "alembic_version" not in inspect(conn).get_table_names():
        command.stamp(config, found)
    command.upgrade(config, HEAD)
