"""Durable promises: records with identity and state that outlive any process.

from promises import open_store, Value
store = open_store("sqlite:///work.db")
store.create("job-42", timeout_at=store.clock() + 3_600_000, ikey="start-42")
store.resolve("job-42", value=Value('{"ok": true}'))
"""

from promises.codec import ErrorInfo, NotSerializable, StoredError
from promises.context import (
    Context,
    NonDeterministicReplay,
    PromiseHandle,
    StepInfo,
    current_step,
)
from promises.errors import (
    InvalidArgument,
    InvariantViolation,
    PromiseAlreadyExists,
    PromiseAlreadySettled,
    PromiseError,
    PromiseNotFound,
    StoreUnavailable,
)
from promises.functions import DurableFunction, UnknownJob, durable
from promises.records import (
    JOB_TAG,
    SEARCH_STATES,
    STATES,
    STEP_TAG,
    TIMER_TAG,
    Promise,
    SearchPage,
    SearchState,
    State,
    Transition,
    Value,
)
from promises.retry import Constant, Exponential, Linear, Never, NonRetryableError, RetryPolicy
from promises.runtime import JobConflict, Runtime
from promises.schedules import Schedule, Schedules
from promises.store import Clock, PromiseStore, SqlStore, open_store, system_clock
from promises.tasks import LeaseLost, TaskInfo
from promises.worker import Worker

__all__ = [
    "JOB_TAG",
    "SEARCH_STATES",
    "STATES",
    "STEP_TAG",
    "TIMER_TAG",
    "Clock",
    "Constant",
    "Context",
    "DurableFunction",
    "ErrorInfo",
    "Exponential",
    "InvalidArgument",
    "InvariantViolation",
    "JobConflict",
    "LeaseLost",
    "Linear",
    "Never",
    "NonDeterministicReplay",
    "NonRetryableError",
    "NotSerializable",
    "Promise",
    "PromiseAlreadyExists",
    "PromiseAlreadySettled",
    "PromiseError",
    "PromiseHandle",
    "PromiseNotFound",
    "PromiseStore",
    "RetryPolicy",
    "Runtime",
    "Schedule",
    "Schedules",
    "SearchPage",
    "SearchState",
    "SqlStore",
    "State",
    "StepInfo",
    "StoreUnavailable",
    "StoredError",
    "TaskInfo",
    "Transition",
    "UnknownJob",
    "Value",
    "Worker",
    "current_step",
    "durable",
    "open_store",
    "system_clock",
]
