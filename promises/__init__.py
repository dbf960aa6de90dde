"""Durable promises: records with identity and state that outlive any process.

from promises import open_store, Value
store = open_store("sqlite:///work.db")
store.create("job-42", timeout_at=store.clock() + 3_600_000, ikey="start-42")
store.resolve("job-42", value=Value('{"ok": true}'))
"""

from promises.errors import (
    InvalidArgument,
    InvariantViolation,
    PromiseAlreadyExists,
    PromiseAlreadySettled,
    PromiseError,
    PromiseNotFound,
    StoreUnavailable,
)
from promises.records import (
    SEARCH_STATES,
    STATES,
    TIMER_TAG,
    Promise,
    SearchPage,
    SearchState,
    State,
    Transition,
    Value,
)
from promises.store import Clock, PromiseStore, SqlStore, open_store, system_clock

__all__ = [
    "SEARCH_STATES",
    "STATES",
    "TIMER_TAG",
    "Clock",
    "InvalidArgument",
    "InvariantViolation",
    "Promise",
    "PromiseAlreadyExists",
    "PromiseAlreadySettled",
    "PromiseError",
    "PromiseNotFound",
    "PromiseStore",
    "SearchPage",
    "SearchState",
    "SqlStore",
    "State",
    "StoreUnavailable",
    "Transition",
    "Value",
    "open_store",
    "system_clock",
]
