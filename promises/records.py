"""The values the store hands out: promises, payloads, transitions and search pages.

These are frozen records, kept apart from the table models in ``schema.py``. A
``Promise`` checks its own invariants when it is built, so a row that breaks the
rules can never leave the store unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal, get_args

from promises.errors import InvariantViolation

State = Literal["pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout"]
STATES: tuple[State, ...] = get_args(State)
SETTLED_STATES: frozenset[State] = frozenset(STATES) - {"pending"}

#: ``search(state=...)`` takes these; ``rejected`` matches all three rejected kinds.
SearchState = Literal["pending", "resolved", "rejected"]
SEARCH_STATES: tuple[SearchState, ...] = get_args(SearchState)

#: The tag that makes a promise a timer: it *resolves* at its timeout instead of timing out.
TIMER_TAG = "promises:timer"
#: Set by the runtime: a job promise's function name, and a step's name.
JOB_TAG = "promises:job"
STEP_TAG = "promises:step"
#: A promise a job created for a *person* to decide (``ctx.approval``).
APPROVAL_TAG = "promises:approval"

#: 9999-12-31T23:59:59.999Z in ms: the latest instant a timeout may name. A promise
#: created with this timeout has no deadline (a job started without one).
MAX_TIMESTAMP = 253_402_300_799_999
NO_DEADLINE = MAX_TIMESTAMP

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Value:
    """A payload: text ``data`` (usually JSON) and string ``headers``."""

    data: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Promise:
    id: str
    state: State
    param: Value
    value: Value
    timeout_at: int
    tags: Mapping[str, str]
    ikey_create: str | None
    ikey_settle: str | None
    created_at: int
    settled_at: int | None

    def __post_init__(self) -> None:
        check_invariants(self)

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    @property
    def timer(self) -> bool:
        return self.tags.get(TIMER_TAG) == "true"

    @property
    def approval(self) -> bool:
        return self.tags.get(APPROVAL_TAG) == "true"

    @property
    def deadline(self) -> int | None:
        """When it times out, or None for a promise without a deadline."""
        return None if self.timeout_at >= NO_DEADLINE else self.timeout_at


def expired_state(promise: Promise) -> State:
    """What a pending promise becomes when its timeout passes."""
    return "resolved" if promise.timer else "rejected_timedout"


def timed_out_at(promise: Promise) -> int:
    """When an expired promise counts as settled: its timeout, never before its creation."""
    return max(promise.timeout_at, promise.created_at)


def effective(promise: Promise, now: int) -> Promise:
    """The promise as it is at ``now``: a pending promise past its timeout is settled.

    Reads apply timeouts with this function without writing; writes and the sweep
    persist the same result, so every reader sees one history.
    """
    if promise.state != "pending" or now < promise.timeout_at:
        return promise
    return replace(promise, state=expired_state(promise), settled_at=timed_out_at(promise))


def check_invariants(p: Promise) -> None:
    """Raise ``InvariantViolation`` if ``p`` breaks a rule every stored promise obeys."""
    problems: list[str] = []
    if p.state not in STATES:
        problems.append(f"unknown state {p.state!r}")
    if (p.settled_at is None) != (p.state == "pending"):
        problems.append(f"state {p.state} with settled_at={p.settled_at}")
    if p.settled_at is not None and p.settled_at < p.created_at:
        problems.append(f"settled_at {p.settled_at} before created_at {p.created_at}")
    if p.state == "rejected_timedout" and p.settled_at != timed_out_at(p):
        problems.append(f"timed out at {p.settled_at}, not at its timeout {p.timeout_at}")
    if p.state == "pending" and (p.value.data is not None or p.ikey_settle is not None):
        problems.append("pending promise carries a settled value or settle key")
    if problems:
        raise InvariantViolation(
            f"promise {p.id!r} breaks the store's invariants: " + "; ".join(problems)
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of create/resolve/reject/cancel.

    ``fresh`` is true when this call changed the store; false when it was a permitted
    duplicate of an earlier call (same idempotency key) and the store was left as it was.
    """

    promise: Promise
    fresh: bool

    @property
    def deduplicated(self) -> bool:
        return not self.fresh


@dataclass(frozen=True, slots=True)
class SearchPage:
    promises: list[Promise]
    #: Pass to the next ``search`` with the same filters; ``None`` when there is no more.
    cursor: str | None
