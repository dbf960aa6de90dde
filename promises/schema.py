"""The tables, declared once with SQLModel, identical on SQLite and PostgreSQL.

``promises``      one row per durable promise; ``seq`` gives search its stable order.
``promise_tags``  one row per tag, so search by tag uses an index on both backends.

A trigger refuses any update of a settled promise: the database itself keeps the
rule "a settled promise never changes", beneath the code that already keeps it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import DDL, BigInteger, Column, ForeignKey, Index, Integer, MetaData, String, event
from sqlmodel import Field, SQLModel

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
    __table_args__ = (Index("ix_promise_tags_key_value_seq", "key", "value", "seq"),)

    seq: int = Field(
        sa_column=Column(_SEQ, ForeignKey("promises.seq", ondelete="CASCADE"), primary_key=True)
    )
    key: str = Field(primary_key=True)
    value: str


promises_table: Any = PromiseRow.__table__  # type: ignore[attr-defined]
tags_table: Any = TagRow.__table__  # type: ignore[attr-defined]
metadata = StoreModel.metadata

IMMUTABLE_MESSAGE = "invariant violated: a settled promise never changes"

event.listen(
    promises_table,
    "after_create",
    DDL(  # type: ignore[no-untyped-call]
        "CREATE TRIGGER IF NOT EXISTS promises_settled_never_change "
        "BEFORE UPDATE ON promises WHEN OLD.state <> 'pending' "
        f"BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE}'); END"
    ).execute_if(dialect="sqlite"),
)
event.listen(
    promises_table,
    "after_create",
    DDL(  # type: ignore[no-untyped-call]
        "CREATE OR REPLACE FUNCTION promises_settled_never_change() RETURNS trigger AS $$ "
        f"BEGIN RAISE EXCEPTION '{IMMUTABLE_MESSAGE}'; END $$ LANGUAGE plpgsql; "
        "CREATE TRIGGER promises_settled_never_change BEFORE UPDATE ON promises "
        "FOR EACH ROW WHEN (OLD.state <> 'pending') "
        "EXECUTE FUNCTION promises_settled_never_change()"
    ).execute_if(dialect="postgresql"),
)


class TaskRow(StoreModel, table=True):
    """The runnable side of a pending job promise: who may run it, from when, and the
    lease that fences stale owners (``counter`` grows by one at every claim)."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_state_ready_at", "state", "ready_at"),
        Index("ix_tasks_state_lease", "state", "lease_expires_at"),
        Index("ix_tasks_waiting_on", "waiting_on"),
    )

    # The job promise's id; retention deleting the promise deletes its task too.
    id: str = Field(
        sa_column=Column(String, ForeignKey("promises.id", ondelete="CASCADE"), primary_key=True)
    )
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
    """A recurring job: the cron expression, what to start, and the next tick."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_next_fire", "state", "next_fire_at"),)

    id: str = Field(primary_key=True)
    cron: str
    timezone: str = "UTC"
    fn: str
    args: str
    state: str  # active | cancelled
    next_fire_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


tasks_table: Any = TaskRow.__table__  # type: ignore[attr-defined]
schedules_table: Any = ScheduleRow.__table__  # type: ignore[attr-defined]
