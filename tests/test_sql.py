"""Every statement the store runs is valid SQL for the schema, on both backends.

The statements in ``promises.sql`` are plain strings (run through the drivers without
an ORM, for speed), so no type checker sees them: this test prepares each one with
EXPLAIN against a new database, so a misspelled column or table fails here.
"""

from __future__ import annotations

import re

import pytest
from psycopg import ClientCursor

from promises import SqlStore
from promises.sql import Statements

_NAMES = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)|%\(([a-z_][a-z0-9_]*)\)s")


def statements(sql: Statements) -> dict[str, str]:
    return {
        name: value
        for name, value in vars(sql).items()
        if isinstance(value, str) and name != "dialect" and value
    }


def test_every_statement_prepares_against_the_schema(store: SqlStore) -> None:
    found = statements(store.sql)
    assert len(found) > 40
    lists = {"ids", "kinds", "names"}
    for name, statement in found.items():
        params = {
            (a or b): (store.sql.ids(["x"]) if (a or b) in lists else None)
            for a, b in _NAMES.findall(statement)
        }
        if store.backend.name == "sqlite":
            conn = store.backend.connect("test")
            try:
                conn.execute("EXPLAIN " + statement, params)
            except Exception as exc:
                pytest.fail(f"statement {name} does not prepare: {exc}\n{statement}")
            finally:
                conn.close()
        else:
            with store.backend.connect("test") as conn:
                try:
                    ClientCursor(conn).execute("EXPLAIN " + statement, params)
                except Exception as exc:
                    pytest.fail(f"statement {name} does not prepare: {exc}\n{statement}")
