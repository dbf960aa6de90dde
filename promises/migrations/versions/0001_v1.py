"""The first schema (agent-tools 0.1): promises, tags, tasks, schedules.

Databases made before migrations existed are at this revision; ``promises.migrate``
recognises them by their ``promises`` table and stamps them.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_IMMUTABLE = "invariant violated: a settled promise never changes"


def upgrade() -> None:
    op.create_table(
        "promises",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String, nullable=False, unique=True),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("timer", sa.Boolean, nullable=False),
        sa.Column("param_headers", sa.String),
        sa.Column("param_data", sa.String),
        sa.Column("value_headers", sa.String),
        sa.Column("value_data", sa.String),
        sa.Column("timeout_at", sa.BigInteger, nullable=False),
        sa.Column("tags", sa.String),
        sa.Column("ikey_create", sa.String),
        sa.Column("ikey_settle", sa.String),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("settled_at", sa.BigInteger),
    )
    op.create_index("ix_promises_settled_at", "promises", ["settled_at"])
    op.create_index("ix_promises_state_seq", "promises", ["state", "seq"])
    op.create_index("ix_promises_state_timeout", "promises", ["state", "timeout_at"])
    op.create_table(
        "promise_tags",
        sa.Column("seq", _SEQ, sa.ForeignKey("promises.seq", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("value", sa.String, nullable=False),
    )
    op.create_index("ix_promise_tags_key_value_seq", "promise_tags", ["key", "value", "seq"])
    op.create_table(
        "tasks",
        sa.Column(
            "id", sa.String, sa.ForeignKey("promises.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("ready_at", sa.BigInteger, nullable=False),
        sa.Column("waiting_on", sa.String),
        sa.Column("owner", sa.String),
        sa.Column("owner_host", sa.String),
        sa.Column("owner_pid", sa.Integer),
        sa.Column("lease_expires_at", sa.BigInteger),
        sa.Column("counter", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("step_id", sa.String),
        sa.Column("step_attempt", sa.Integer, nullable=False),
        sa.Column("progress", sa.String),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_tasks_waiting_on", "tasks", ["waiting_on"])
    op.create_index("ix_tasks_state_ready_at", "tasks", ["state", "ready_at"])
    op.create_index("ix_tasks_state_lease", "tasks", ["state", "lease_expires_at"])
    op.create_table(
        "schedules",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("cron", sa.String, nullable=False),
        sa.Column("timezone", sa.String, nullable=False),
        sa.Column("fn", sa.String, nullable=False),
        sa.Column("args", sa.String, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("next_fire_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_schedules_next_fire", "schedules", ["state", "next_fire_at"])
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER IF NOT EXISTS promises_settled_never_change "
            "BEFORE UPDATE ON promises WHEN OLD.state <> 'pending' "
            f"BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}'); END"
        )
    else:
        op.execute(
            "CREATE OR REPLACE FUNCTION promises_settled_never_change() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION '{_IMMUTABLE}'; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER promises_settled_never_change BEFORE UPDATE ON promises "
            "FOR EACH ROW WHEN (OLD.state <> 'pending') "
            "EXECUTE FUNCTION promises_settled_never_change()"
        )


def downgrade() -> None:
    raise NotImplementedError("the store's migrations go forward only")
