"""Alembic environment for the store's migrations.

``promises.migrate`` runs them on a connection it holds (under the write lock on
SQLite, an advisory lock on PostgreSQL), passed in ``config.attributes``. To write a
new migration: add ``versions/NNNN_what.py`` with ``down_revision`` the current head
and move ``promises.schema.HEAD`` to it; ``tests/test_migrations.py`` checks that a
migrated database and a new one have the same schema.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
