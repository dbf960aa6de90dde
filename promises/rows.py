"""Rows as the drivers return them, turned into the store's records.

Statements select columns in the orders ``promises.sql`` names (``PROMISE_COLUMNS``,
``TASK_COLUMNS``); these functions unpack them by position, which is what a page of
a search or a job's children costs most of all.
"""

from __future__ import annotations

import json
from typing import Any

from promises.errors import InvariantViolation
from promises.records import Promise, Value
from promises.sql import PROMISE_COLUMNS, TASK_COLUMNS
from promises.validation import loads_mapping

PROMISE_WIDTH = len(PROMISE_COLUMNS.split(","))
TASK_WIDTH = len(TASK_COLUMNS.split(","))


def promise_from_row(row: Any) -> Promise:
    (_seq, id, state, _timer, param_headers, param_data, value_headers, value_data,
     timeout_at, tags, ikey_create, ikey_settle, created_at, settled_at) = row  # fmt: skip
    return Promise(
        id=id,
        state=state,
        param=Value(param_data, loads_mapping(param_headers)),
        value=Value(value_data, loads_mapping(value_headers)),
        timeout_at=timeout_at,
        tags=loads_mapping(tags),
        ikey_create=ikey_create,
        ikey_settle=ikey_settle,
        created_at=created_at,
        settled_at=settled_at,
    )


def progress_from_text(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise InvariantViolation(f"a task's progress is not JSON: {text[:80]!r}") from exc
    return loaded if isinstance(loaded, dict) else None
