"""Durable promises: records with identity and state that outlive any process.

from promises import open_store, Value
store = open_store("sqlite:///work.db")
store.create("job-42", timeout_at=store.clock() + 3_600_000, ikey="start-42")
store.resolve("job-42", value=Value('{"ok": true}'))
"""

from typing import TYPE_CHECKING

from promises.approvals import (
    Approval,
    Decision,
    decide,
    get_approval,
    list_approvals,
)
from promises.codec import ErrorInfo, StoredError
from promises.context import Context, PromiseHandle, StepInfo, current_step
from promises.contract import PromiseStore
from promises.errors import (
    AlreadyDecided,
    ApprovalClosed,
    ApprovalExpired,
    ApprovalWithdrawn,
    InvalidArgument,
    InvariantViolation,
    JobConflict,
    LeaseLost,
    NonDeterministicReplay,
    NotAnApproval,
    NotSerializable,
    OutcomeUnknown,
    PromiseAlreadyExists,
    PromiseAlreadySettled,
    PromiseError,
    PromiseNotFound,
    StoreMisconfigured,
    StoreUnavailable,
    UnknownJob,
    WaitPastDeadline,
)
from promises.functions import DurableFunction, durable
from promises.observe import NullObserver, Observer
from promises.presence import KindAvailability, WorkerInfo
from promises.records import (
    APPROVAL_TAG,
    JOB_TAG,
    NO_DEADLINE,
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
from promises.runtime import Runtime
from promises.schedules import Schedule, Schedules
from promises.store import Clock, SqlStore, open_store, open_store_waiting, system_clock
from promises.tasks import Progress, TaskInfo
from promises.validation import MAX_JOB_ID_LENGTH, check_job_id
from promises.views import JobView

if TYPE_CHECKING:
    from promises.worker import Worker


def __getattr__(name: str) -> object:
    # The worker module is also a program (python -m promises.worker): importing it here
    # eagerly would make runpy warn that it was imported before it ran.
    if name == "Worker":
        from promises.worker import Worker

        return Worker
    raise AttributeError(f"module 'promises' has no attribute {name!r}")


__all__ = [
    "APPROVAL_TAG",
    "JOB_TAG",
    "MAX_JOB_ID_LENGTH",
    "NO_DEADLINE",
    "SEARCH_STATES",
    "STATES",
    "STEP_TAG",
    "TIMER_TAG",
    "AlreadyDecided",
    "Approval",
    "ApprovalClosed",
    "ApprovalExpired",
    "ApprovalWithdrawn",
    "Clock",
    "Constant",
    "Context",
    "Decision",
    "DurableFunction",
    "ErrorInfo",
    "Exponential",
    "InvalidArgument",
    "InvariantViolation",
    "JobConflict",
    "JobView",
    "KindAvailability",
    "LeaseLost",
    "Linear",
    "Never",
    "NonDeterministicReplay",
    "NonRetryableError",
    "NotAnApproval",
    "NotSerializable",
    "NullObserver",
    "Observer",
    "OutcomeUnknown",
    "Progress",
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
    "StoreMisconfigured",
    "StoreUnavailable",
    "StoredError",
    "TaskInfo",
    "Transition",
    "UnknownJob",
    "Value",
    "WaitPastDeadline",
    "Worker",
    "WorkerInfo",
    "check_job_id",
    "current_step",
    "decide",
    "durable",
    "get_approval",
    "list_approvals",
    "open_store",
    "open_store_waiting",
    "system_clock",
]
