"""Shared fixtures: a controllable clock, and stores on a real SQLite file and on the
real PostgreSQL server (each test in its own schema). Tests that take ``store`` run
against both backends: one contract, every backend."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from promises import SqlStore, open_store

PG_URL = os.environ.get("AGENT_TOOLS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
START = 1_800_000_000_000  # a fixed instant (2027-01-15) so tests never depend on today


class FakeClock:
    """Milliseconds since the epoch that move only when a test says so."""

    def __init__(self, now: int = START) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        with self._lock:
            self.now += ms


def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("+psycopg", ""), connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL is not reachable at {PG_URL}: {exc}"


_PG_PROBLEM = _postgres_problem()
requires_postgres = pytest.mark.skipif(_PG_PROBLEM is not None, reason=_PG_PROBLEM or "")


class PgSchema:
    """A fresh schema on the test server; the URL points the store at it."""

    def __init__(self) -> None:
        import psycopg

        self.name = "t_" + uuid.uuid4().hex[:12]
        self._dsn = PG_URL.replace("+psycopg", "")
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        self.url = f"{PG_URL}?options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.name} CASCADE")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pg_url() -> Iterator[str]:
    if _PG_PROBLEM is not None:
        pytest.skip(_PG_PROBLEM)
    schema = PgSchema()
    yield schema.url
    schema.drop()


BACKENDS = ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, requires_postgres])]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/promises.db"
    else:
        schema = PgSchema()
        yield schema.url
        schema.drop()


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[SqlStore]:
    with open_store(store_url, clock=clock, poll_interval=0.05) as s:
        yield s


def raw(store: SqlStore, statement: str) -> list[Any]:
    """Run raw SQL in a write transaction of ``store`` (for tests that look beneath the
    store, or break it on purpose)."""
    return store.db.write(
        lambda tx: (
            tx.all(statement)
            if statement.lstrip().upper().startswith("SELECT")
            else [tx.execute(statement)]
        )
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """A test that runs the CLI in-process installs its log handler on the test's own
    (captured, later closed) stderr: put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
