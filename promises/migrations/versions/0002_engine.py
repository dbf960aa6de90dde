"""Wake-ups from the data, workers by kind, schedules that report, approvals.

* ``tasks.kind``: a worker claims only the kinds it has loaded (filled in from each
  job's ``promises:job`` tag).
* ``promise_tags.pending`` and a partial index: pending promises by tag, fast.
* ``schedules``: ``last_fired_at``, ``last_job_id``, ``last_error``, ``last_error_at``,
  ``failures``; a schedule may now also be ``paused``.
* ``workers``: who runs which kinds, for "waiting for a worker with kind X".
* A trigger makes a task waiting on a promise ready when that promise settles, whoever
  settles it (before, only a runtime in the settling process did); on PostgreSQL it
  also announces settles and ready tasks with NOTIFY. Tasks that were left waiting on
  promises already settled are made ready now.
* Jobs no longer get a deadline they did not ask for. Jobs started by 0.1 got one hour
  by default, which cut their sleeps and approvals short: pending jobs whose deadline
  is exactly one hour after their start lose it (and so do their steps in flight).
* Promises that 0.1 jobs made with ``ctx.promise`` and that are still pending are
  tagged as approvals: 0.1 showed every one of them to people as an approval.

Revision ID: 0002
Revises: 0001
"""

import json
import time

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_HOUR = 3_600_000
_NO_DEADLINE = 253_402_300_799_999
_JOB_TAG = "promises:job"
_STEP_TAG = "promises:step"
_APPROVAL_TAG = "promises:approval"

_SQLITE_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS promises_on_settle "
    "AFTER UPDATE OF state ON promises "
    "WHEN OLD.state = 'pending' AND NEW.state <> 'pending' BEGIN "
    "UPDATE tasks SET state = 'done', owner = NULL, lease_expires_at = NULL, "
    "waiting_on = NULL, updated_at = NEW.settled_at WHERE id = NEW.id AND state <> 'done'; "
    "UPDATE tasks SET ready_at = NEW.settled_at, updated_at = NEW.settled_at "
    "WHERE waiting_on = NEW.id AND state = 'ready'; "
    "UPDATE promise_tags SET pending = 0 WHERE seq = NEW.seq; "
    "END"
)
_POSTGRES = [
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
    'CREATE INDEX ix_promises_id_c ON promises (id COLLATE "C")',
]


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"

    op.add_column("tasks", sa.Column("kind", sa.String, nullable=False, server_default=""))
    op.drop_index("ix_tasks_state_ready_at", "tasks")
    op.create_index("ix_tasks_ready", "tasks", ["state", "ready_at", "kind"])
    op.execute(
        "UPDATE tasks SET kind = COALESCE((SELECT t.value FROM promise_tags t "
        "JOIN promises p ON p.seq = t.seq WHERE p.id = tasks.id "
        f"AND t.key = '{_JOB_TAG}'), '')"
    )

    op.add_column(
        "promise_tags", sa.Column("pending", sa.Integer, nullable=False, server_default="1")
    )
    op.execute(
        "UPDATE promise_tags SET pending = 0 "
        "WHERE seq IN (SELECT seq FROM promises WHERE state <> 'pending')"
    )
    op.create_index(
        "ix_promise_tags_pending",
        "promise_tags",
        ["key", "value", "seq"],
        sqlite_where=sa.text("pending = 1"),
        postgresql_where=sa.text("pending = 1"),
    )

    for column in (
        sa.Column("last_fired_at", sa.BigInteger),
        sa.Column("last_job_id", sa.String),
        sa.Column("last_error", sa.String),
        sa.Column("last_error_at", sa.BigInteger),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    ):
        op.add_column("schedules", column)

    op.create_table(
        "workers",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("host", sa.String, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("kinds", sa.String, nullable=False),
        sa.Column("listener", sa.String),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("seen_at", sa.BigInteger, nullable=False),
        sa.Column("stopped_at", sa.BigInteger),
    )

    _drop_implicit_deadlines(bind)
    _tag_approvals(bind)
    now = int(time.time() * 1000)
    op.execute(
        sa.text(
            "UPDATE tasks SET ready_at = :now WHERE state = 'ready' AND waiting_on IN "
            "(SELECT id FROM promises WHERE state <> 'pending')"
        ).bindparams(now=now)
    )

    if sqlite:
        op.execute(_SQLITE_TRIGGER)
    else:
        for statement in _POSTGRES:
            op.execute(statement)


def _drop_implicit_deadlines(bind: sa.Connection) -> None:
    jobs = bind.execute(
        sa.text(
            "SELECT p.id, p.timeout_at FROM promises p JOIN promise_tags t ON t.seq = p.seq "
            "WHERE t.key = :tag AND p.state = 'pending' AND p.timeout_at - p.created_at = :hour"
        ),
        {"tag": _JOB_TAG, "hour": _HOUR},
    ).all()
    for job_id, timeout_at in jobs:
        rows = bind.execute(
            sa.text(
                "SELECT id, param_headers FROM promises WHERE state = 'pending' "
                "AND timeout_at = :timeout_at AND timer = :no "
                "AND (id = :id OR id LIKE :children ESCAPE '\\')"
            ),
            {
                "timeout_at": timeout_at,
                "no": False,
                "id": job_id,
                "children": job_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                + ".%",
            },
        ).all()
        for promise_id, headers in rows:
            step = json.loads(headers).get(_STEP_TAG) if headers else None
            if promise_id != job_id and not promise_id.startswith(job_id + "."):
                continue  # LIKE ignores case on SQLite
            if promise_id == job_id or step not in ("promise", "sleep"):
                bind.execute(
                    sa.text("UPDATE promises SET timeout_at = :none WHERE id = :id"),
                    {"none": _NO_DEADLINE, "id": promise_id},
                )


def _tag_approvals(bind: sa.Connection) -> None:
    rows = bind.execute(
        sa.text(
            "SELECT seq, param_headers, tags FROM promises "
            "WHERE state = 'pending' AND param_headers LIKE :step"
        ),
        {"step": f'%"{_STEP_TAG}":"promise"%'},
    ).all()
    for seq, headers, tags in rows:
        if json.loads(headers).get(_STEP_TAG) != "promise":
            continue
        merged = {**(json.loads(tags) if tags else {}), _APPROVAL_TAG: "true"}
        bind.execute(
            sa.text("UPDATE promises SET tags = :tags WHERE seq = :seq"),
            {"tags": json.dumps(merged, separators=(",", ":"), sort_keys=True), "seq": seq},
        )
        bind.execute(
            sa.text(
                "INSERT INTO promise_tags (seq, key, value, pending) VALUES (:seq, :key, 'true', 1)"
            ),
            {"seq": seq, "key": _APPROVAL_TAG},
        )


def downgrade() -> None:
    raise NotImplementedError("the store's migrations go forward only")
