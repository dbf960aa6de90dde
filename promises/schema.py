"""The tables, declared once with SQLModel, identical on SQLite and PostgreSQL.

``promises``      one row per durable promise; ``seq`` gives search its stable order.
``promise_tags``  one row per tag, so search by tag uses an index on both backends;
                  ``pending`` mirrors the promise's state for the pending-by-tag index.
``tasks``         the runnable side of a pending job promise: lease, fence, readiness.
``schedules``     cron schedules: what to start, the next tick, the last outcome.
``workers``       the workers that run (or ran) on this store, and the kinds they load.

Triggers keep the rules that must hold whoever writes, in the database itself:

* a settled promise never changes;
* when a promise settles, its own task is done and every task waiting on it becomes
  ready at once — so a settle made by any process, even through a bare store with
  no runtime, wakes the job waiting on it;
* on PostgreSQL, those changes are announced with ``NOTIFY`` on the channel
  ``promises:<schema>`` (``s<id>`` for a settle, ``t<kind>`` for a task made ready),
  which wakes waiters and workers on every machine.

Schema changes come with a migration in ``promises/migrations`` (``HEAD`` below names
the newest); ``promises.migrate`` brings an existing database up to it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, MetaData, String, Table, text
from sqlmodel import Field, SQLModel

#: The newest migration; a database at this revision has exactly these tables.
HEAD = "0003"

# INTEGER PRIMARY KEY is SQLite's rowid alias (fast, autoincrementing); BIGSERIAL elsewhere.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")


class StoreModel(SQLModel):
    """Base of the store's tables: their own metadata, so an application's SQLModel
    tables are never created in the promise database (and ours never in theirs)."""

    metadata = MetaData()


class PromiseRow(StoreModel, table=True):
    __tablename__ = "promises"
    __table_args__ = (
        Index("ix_promises_state_seq", "state", "seq"),
        Index("ix_promises_state_timeout", "state", "timeout_at"),
        Index("ix_promises_settled_at", "settled_at"),
    )

    seq: int | None = Field(
        default=None, sa_column=Column(_SEQ, primary_key=True, autoincrement=True)
    )
    id: str = Field(unique=True)
    state: str
    timer: bool = False
    param_headers: str | None = None
    param_data: str | None = None
    value_headers: str | None = None
    value_data: str | None = None
    timeout_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    tags: str | None = None
    ikey_create: str | None = None
    ikey_settle: str | None = None
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    settled_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class TagRow(StoreModel, table=True):
    __tablename__ = "promise_tags"
    __table_args__ = (
        Index("ix_promise_tags_key_value_seq", "key", "value", "seq"),
        # Only the tags of pending promises: "pending jobs of kind X" walks this index.
        Index(
            "ix_promise_tags_pending",
            "key",
            "value",
            "seq",
            sqlite_where=text("pending = 1"),
            postgresql_where=text("pending = 1"),
        ),
    )

    seq: int = Field(
        sa_column=Column(_SEQ, ForeignKey("promises.seq", ondelete="CASCADE"), primary_key=True)
    )
    key: str = Field(primary_key=True)
    value: str
    pending: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))


class TaskRow(StoreModel, table=True):
    """The runnable side of a pending job promise: who may run it, from when, and the
    lease that fences stale owners (``counter`` grows by one at every claim)."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_ready", "state", "ready_at", "kind"),
        Index("ix_tasks_state_lease", "state", "lease_expires_at"),
        # Both columns: waking the tasks waiting on a promise reads only those, even
        # where the planner's statistics are behind (see migration 0003).
        Index("ix_tasks_waiting_on_state", "waiting_on", "state"),
    )

    # The job promise's id; retention deleting the promise deletes its task too.
    id: str = Field(
        sa_column=Column(String, ForeignKey("promises.id", ondelete="CASCADE"), primary_key=True)
    )
    #: The job's function name: a worker claims only the kinds it has loaded.
    kind: str = Field(sa_column=Column(String, nullable=False, server_default=""))
    state: str  # ready | claimed | done
    ready_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    waiting_on: str | None = None
    owner: str | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    lease_expires_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    counter: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    attempts: int = 0
    step_id: str | None = None
    step_attempt: int = 0
    progress: str | None = None
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class ScheduleRow(StoreModel, table=True):
    """A recurring job: the cron expression, what to start, the next tick, and how the
    last tick went."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_next_fire", "state", "next_fire_at"),)

    id: str = Field(primary_key=True)
    cron: str
    timezone: str = "UTC"
    fn: str
    args: str
    state: str  # active | paused | cancelled
    next_fire_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_fired_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_job_id: str | None = None
    last_error: str | None = None
    last_error_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    failures: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class WorkerRow(StoreModel, table=True):
    """A worker process and the kinds it runs. Liveness is judged without writes: the
    process on this host, or its listening connection on PostgreSQL."""

    __tablename__ = "workers"

    id: str = Field(primary_key=True)
    host: str
    pid: int
    kinds: str  # JSON list
    #: PostgreSQL: the application_name of its listening connection (alive while open).
    listener: str | None = None
    started_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    seen_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    stopped_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} has no table")
    return table


promises_table = _table(PromiseRow)
tags_table = _table(TagRow)
tasks_table = _table(TaskRow)
schedules_table = _table(ScheduleRow)
workers_table = _table(WorkerRow)
metadata = StoreModel.metadata

IMMUTABLE_MESSAGE = "invariant violated: a settled promise never changes"

SQLITE_DDL = [
    "CREATE TRIGGER IF NOT EXISTS promises_settled_never_change "
    "BEFORE UPDATE ON promises WHEN OLD.state <> 'pending' "
    f"BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE}'); END",
    "CREATE TRIGGER IF NOT EXISTS promises_on_settle "
    "AFTER UPDATE OF state ON promises "
    "WHEN OLD.state = 'pending' AND NEW.state <> 'pending' BEGIN "
    "UPDATE tasks SET state = 'done', owner = NULL, lease_expires_at = NULL, "
    "waiting_on = NULL, updated_at = NEW.settled_at WHERE id = NEW.id AND state <> 'done'; "
    "UPDATE tasks SET ready_at = NEW.settled_at, updated_at = NEW.settled_at "
    "WHERE waiting_on = NEW.id AND state = 'ready'; "
    "UPDATE promise_tags SET pending = 0 WHERE seq = NEW.seq; "
    "END",
]

POSTGRES_DDL = [
    "CREATE OR REPLACE FUNCTION promises_settled_never_change() RETURNS trigger AS $$ "
    f"BEGIN RAISE EXCEPTION '{IMMUTABLE_MESSAGE}'; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER promises_settled_never_change BEFORE UPDATE ON promises "
    "FOR EACH ROW WHEN (OLD.state <> 'pending') "
    "EXECUTE FUNCTION promises_settled_never_change()",
    "CREATE OR REPLACE FUNCTION promises_on_settle() RETURNS trigger AS $$ BEGIN "
    "UPDATE tasks SET state = 'done', owner = NULL, lease_expires_at = NULL, "
    "waiting_on = NULL, updated_at = NEW.settled_at WHERE id = NEW.id AND state <> 'done'; "
    "UPDATE tasks SET ready_at = NEW.settled_at, updated_at = NEW.settled_at "
    "WHERE waiting_on = NEW.id AND state = 'ready'; "
    "UPDATE promise_tags SET pending = 0 WHERE seq = NEW.seq; "
    "PERFORM pg_notify('promises:' || current_schema(), 's' || NEW.id); "
    "RETURN NULL; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER promises_on_settle AFTER UPDATE OF state ON promises "
    "FOR EACH ROW WHEN (OLD.state = 'pending' AND NEW.state <> 'pending') "
    "EXECUTE FUNCTION promises_on_settle()",
    "CREATE OR REPLACE FUNCTION tasks_on_ready() RETURNS trigger AS $$ BEGIN "
    "PERFORM pg_notify('promises:' || current_schema(), 't' || NEW.kind); "
    "RETURN NULL; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER tasks_on_ready AFTER INSERT OR UPDATE OF state, ready_at ON tasks "
    "FOR EACH ROW WHEN (NEW.state = 'ready') EXECUTE FUNCTION tasks_on_ready()",
    # A job's children are the ids in a range; compare them in byte order whatever the
    # database's collation, with an index that does the same.
    'CREATE INDEX ix_promises_id_c ON promises (id COLLATE "C")',
]
