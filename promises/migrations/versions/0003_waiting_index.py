"""Waking the tasks that wait on a promise no longer reads every ready task.

When a promise settles, the store's trigger makes the tasks waiting on it ready
(``WHERE waiting_on = :id AND state = 'ready'``). With the index on ``waiting_on``
alone, PostgreSQL could combine it with the index on ``state`` and read the entry of
every ready task, sleeping ones included, on each settle: 0.4 ms at 30,000 sleeping
jobs, and growing with them, whenever its statistics were behind (autovacuum off, or
a table that just grew). The index now holds both columns, so that statement reads
only the tasks waiting on that promise, whatever the statistics say.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_tasks_waiting_on", "tasks")
    op.create_index("ix_tasks_waiting_on_state", "tasks", ["waiting_on", "state"])


def downgrade() -> None:
    raise NotImplementedError("the store's migrations go forward only")
