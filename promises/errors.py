"""Errors raised by the promise store and the runtime on it.

Every error has one root, so a caller can catch the package with one clause::

    PromiseError
    ├── PromiseNotFound          settling an id nobody created (or one collected by retention)
    ├── PromiseAlreadyExists     a create that is neither fresh nor a permitted duplicate
    ├── PromiseAlreadySettled    a settle that is neither fresh nor a permitted duplicate
    ├── InvalidArgument          a bad id, payload, tag, timeout, limit or cursor
    │   ├── JobConflict          a job id already used by a job with other arguments
    │   ├── UnknownJob           no durable function is registered under that name
    │   ├── NotSerializable      a job's argument or result is not JSON
    │   ├── WaitPastDeadline     a job asked to wait past its own deadline
    │   └── NotAnApproval        a person tried to decide a promise that is not an approval
    ├── ApprovalClosed           an approval that can no longer be decided
    │   ├── AlreadyDecided       somebody decided it first; the first decision stands
    │   ├── ApprovalExpired      its deadline passed without a decision
    │   └── ApprovalWithdrawn    the job that asked for it has ended
    ├── NonDeterministicReplay   a replay called another step than the one recorded
    ├── LeaseLost                this worker no longer holds the job's task
    ├── StoreUnavailable         the database is unreachable or busy; safe to retry
    │   ├── OutcomeUnknown       it may be done, or done in part: retry with the same key
    │   └── StoreMisconfigured   wrong credentials or no such database: fix, then retry
    └── InvariantViolation       the store found itself in a state the rules forbid

``PromiseAlreadyExists`` and ``PromiseAlreadySettled`` carry the promise's current
``state``. Messages name the thing and the way out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promises.records import State


class PromiseError(Exception):
    """Root of every error the promise store and runtime raise."""


class PromiseNotFound(PromiseError):
    def __init__(self, promise_id: str) -> None:
        self.promise_id = promise_id
        super().__init__(
            f"promise {promise_id!r} does not exist; create it first "
            "(or it was settled long ago and collected by retention)"
        )


class PromiseAlreadyExists(PromiseError):
    def __init__(self, promise_id: str, state: State) -> None:
        self.promise_id = promise_id
        self.state: State = state
        super().__init__(
            f"promise {promise_id!r} already exists and is {state}; "
            "pass the same idempotency key to get the existing promise, or use a new id"
        )


class PromiseAlreadySettled(PromiseError):
    def __init__(self, promise_id: str, state: State) -> None:
        self.promise_id = promise_id
        self.state: State = state
        super().__init__(
            f"promise {promise_id!r} is already {state}; a settled promise never changes "
            "(a retry with the same idempotency key returns its outcome)"
        )


class InvalidArgument(PromiseError, ValueError):
    """An argument is malformed; the message says which one and what is allowed."""


class JobConflict(InvalidArgument):
    """A job id already in use by a job with other arguments."""


class UnknownJob(InvalidArgument):
    """No durable function is registered under that name."""


class NotSerializable(InvalidArgument):
    """A value a job takes or returns is not JSON."""


class WaitPastDeadline(InvalidArgument):
    """A job with a deadline asked for a sleep or a promise that would end after it."""


class NotAnApproval(InvalidArgument):
    """Only approvals (promises a job created for a person) may be decided by people."""


class ApprovalClosed(PromiseError):
    """The approval can no longer be decided. ``approval`` is how it stands now."""

    def __init__(self, message: str, approval: Any) -> None:
        super().__init__(message)
        self.approval = approval


class AlreadyDecided(ApprovalClosed):
    pass


class ApprovalExpired(ApprovalClosed):
    pass


class ApprovalWithdrawn(ApprovalClosed):
    pass


class NonDeterministicReplay(PromiseError):
    """A replay called a different step than the one recorded at that position."""


class LeaseLost(PromiseError):
    """This worker no longer owns the task (another claimed it, or the job settled)."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(
            f"task {task_id!r} is no longer held by this worker (its lease expired and "
            "another worker claimed it, or its job was settled); its writes were refused"
        )


class StoreUnavailable(PromiseError):
    """The database could not complete the operation (locked too long, gone away).
    Nothing was changed; the same call may be retried."""


class OutcomeUnknown(StoreUnavailable):
    """The connection broke while the database was committing: the operation may have
    been done or not; or it was done only in part (a write whose first statement
    committed alone, the rest refused). A retry with the same idempotency key is safe
    (and tells which, or finishes it)."""


class StoreMisconfigured(StoreUnavailable):
    """The database refused the connection itself: wrong user or password, or no such
    database. Retrying helps only once that is fixed."""


class InvariantViolation(PromiseError):
    """A rule the store relies on was broken. The operation stopped; nothing was hidden."""
