"""Errors raised by the promise store.

Every error has one root, so a caller can catch the package with one clause::

    PromiseError
    ├── PromiseNotFound          settling an id nobody created (or one collected by retention)
    ├── PromiseAlreadyExists     a create that is neither fresh nor a permitted duplicate
    ├── PromiseAlreadySettled    a settle that is neither fresh nor a permitted duplicate
    ├── InvalidArgument          a bad id, payload, tag, timeout, limit or cursor
    ├── StoreUnavailable         the database refused or timed out (driver error inside)
    └── InvariantViolation       the store found itself in a state the rules forbid

``PromiseAlreadyExists`` and ``PromiseAlreadySettled`` carry the promise's current
``state``. Messages name the promise and the way out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promises.records import State


class PromiseError(Exception):
    """Root of every error the promise store raises."""


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
            "(retry with the settle's own idempotency key to get its outcome again)"
        )


class InvalidArgument(PromiseError, ValueError):
    """An argument is malformed; the message says which one and what is allowed."""


class StoreUnavailable(PromiseError):
    """The database could not complete the operation (locked too long, gone away)."""


class InvariantViolation(PromiseError):
    """A rule the store relies on was broken. The operation stopped; nothing was hidden."""
