"""Schema changes come with migrations (issue 9, item 11).

A database made by agent-tools 0.1 (``tests/data``: a SQLite file and a PostgreSQL
dump, with jobs in every state) is upgraded in place on first open; its jobs in flight
then finish as they should under the new rules; the upgraded schema is the same as a
new database's; and several processes opening an old database at once are fine.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import inspect, text

from agent_tools import builtin_jobs
from promises import Runtime, Schedules, SqlStore, Worker, decide, open_store
from promises.functions import REGISTRY
from promises.migrate import _KNOWN
from promises.schema import HEAD
from tests import durable_jobs  # noqa: F401  (registers the fixture's job kinds)
from tests.conftest import PG_URL, START, FakeClock, PgSchema, requires_postgres

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.anyio
HOUR = 3_600_000
MINUTE = 60_000


@pytest.fixture
def old_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "old.db"
    shutil.copy(DATA / "schema-v1.db", path)
    return f"sqlite:///{path}"


class OldPostgres:
    """The 0.1 dump restored into a schema of its own."""

    def __init__(self) -> None:
        self.name = "v1_" + uuid.uuid4().hex[:10]
        script = (DATA / "schema-v1.postgres.sql").read_text().replace("__SCHEMA__", self.name)
        dsn = PG_URL.replace("+psycopg", "")
        subprocess.run(
            ["psql", dsn, "-q", "-v", "ON_ERROR_STOP=1"],
            input=script, text=True, check=True, capture_output=True,
        )  # fmt: skip
        self.url = f"{PG_URL}?options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.name} CASCADE")


@pytest.fixture
def old_postgres() -> Iterator[str]:
    from tests.conftest import _PG_PROBLEM

    if _PG_PROBLEM is not None:
        pytest.skip(_PG_PROBLEM)
    if shutil.which("psql") is None:
        pytest.skip("psql (the PostgreSQL client) is needed to restore the 0.1 dump")
    old = OldPostgres()
    yield old.url
    old.drop()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, requires_postgres])]
)
def old_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return str(request.getfixturevalue("old_sqlite"))
    return str(request.getfixturevalue("old_postgres"))


def revision(store: SqlStore) -> str:
    with store.backend.engine.connect() as conn:
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar())


async def test_a_01_database_upgrades_and_its_jobs_in_flight_finish(old_url: str) -> None:
    clock = FakeClock(START + 1000)
    kinds = {
        k: REGISTRY[k]
        for k in ("approval", "sleep", "tests.squares", "tests.fails", "tests.sleeper")
    }
    with open_store(old_url, clock=clock, poll_interval=0.05) as store:
        assert revision(store) == HEAD
        runtime = Runtime(store, registry=kinds)
        # Jobs 0.1 gave a one-hour deadline by default have none now.
        for job_id in ("v1-approval", "v1-sleep", "v1-sleeping", "v1-ready"):
            assert store.get(job_id).deadline is None, job_id
        # The tasks know their kinds; the 0.1 approval is an approval people can decide.
        assert runtime.view("v1-sleeping").task.kind == "tests.sleeper"  # type: ignore[union-attr]
        assert store.get("v1-approval.0").approval
        worker = Worker(runtime, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        try:
            assert runtime.result(await store.wait("v1-ready", timeout=30)) == [0, 1, 4]
            clock.advance(2 * HOUR)  # past 0.1's deadline: the waits go on
            decided = await asyncio.to_thread(
                decide, store, "v1-approval.0", approved=True, comment="after the upgrade"
            )
            assert decided.state == "approved"
            approval = await store.wait("v1-approval", timeout=30)
            assert runtime.result(approval)["comment"] == "after the upgrade"
            assert runtime.result(await store.wait("v1-sleep", timeout=30)) == {"slept_s": 7200}
            slept = runtime.result(await store.wait("v1-sleeping", timeout=30))
            assert slept["after"] >= slept["before"]
            assert store.get("v1-timer").state == "resolved"
            fired = await asyncio.to_thread(Schedules(runtime).get, "v1-cron")
            assert fired is not None and fired.last_job_id is not None and fired.failures == 0
        finally:
            worker.stop()
            await running
        assert runtime.result(store.get("v1-done")) == [0, 1]
        assert store.get("v1-failed").state == "rejected"


def schema_of(url: str) -> dict[str, Any]:
    """Tables, columns, indexes and triggers, as the database reports them."""
    with open_store(url) as store, store.backend.engine.connect() as conn:
        found = inspect(conn)
        tables = {}
        for table in sorted(found.get_table_names()):
            columns = {
                c["name"]: (str(c["type"]).split("(")[0], c["nullable"])
                for c in found.get_columns(table)
            }
            indexes = {
                i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
                for i in found.get_indexes(table)
            }
            tables[table] = (columns, indexes)
        if store.backend.name == "sqlite":
            triggers = (
                conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
                )
                .scalars()
                .all()
            )
        else:
            triggers = (
                conn.execute(
                    text(
                        "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                        "WHERE NOT tgisinternal AND c.relnamespace = current_schema()::regnamespace "
                        "ORDER BY tgname"
                    )
                )
                .scalars()
                .all()
            )
        return {"tables": tables, "triggers": list(triggers)}


def test_an_upgraded_database_has_the_schema_of_a_new_one(old_url: str, tmp_path: Path) -> None:
    if old_url.startswith("sqlite"):
        assert schema_of(old_url) == schema_of(f"sqlite:///{tmp_path}/fresh.db")
        return
    fresh = PgSchema()
    try:
        assert schema_of(old_url) == schema_of(fresh.url)
    finally:
        fresh.drop()


def test_several_processes_opening_an_old_database_at_once_upgrade_it_once(
    old_url: str, tmp_path: Path
) -> None:
    # Four processes, released together by a file they watch for, each open the old
    # database: one upgrades it, the others wait for that and use it.
    go = tmp_path / "go"
    script = (
        "import sys, time, pathlib\n"
        "from promises import open_store\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "while not go.exists(): time.sleep(0.001)\n"
        "with open_store(sys.argv[1]) as store: store.get('v1-done')\n"
    )
    root = Path(__file__).parent.parent
    command = [sys.executable, "-c", script, old_url, str(go)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [subprocess.Popen(command, cwd=root, text=True, **pipes) for _ in range(4)]
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
    with open_store(old_url) as store:
        assert revision(store) == HEAD


def test_the_known_revisions_are_the_migration_scripts() -> None:
    scripts = sorted(
        p.name.split("_")[0]
        for p in (Path(__file__).parent.parent / "promises" / "migrations" / "versions").glob(
            "*.py"
        )
    )
    assert tuple(scripts) == _KNOWN and _KNOWN[-1] == HEAD


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    open_store(url).close()
    with open_store(url) as store, store.backend.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(Exception, match="newer than this version of agent-tools knows"):
        open_store(url)
    assert builtin_jobs.approval.name == "approval"
