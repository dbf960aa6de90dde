"""The durable promise transition rules, as pure functions.

These decide what happens when a create or settle meets an *existing* promise (the
store handles the two fresh cases, create-on-unknown and settle-on-pending, directly
in SQL). They follow Resonate's Durable Promise Specification and its 324-row
transition table (``tests/data/durable-promise-transitions.md``):

* pending + create: a duplicate iff the create key matches, whatever ``strict``.
* settled + create: a duplicate iff the create key matches and not ``strict``.
* settled + settle of the same kind: a duplicate iff the settle key matches.
* settled + settle of another kind: a duplicate iff the settle key matches and not
  ``strict``.
* timed out + settle: a duplicate if not ``strict``, whatever the key.
* a key that was never stored matches nothing.

Each function returns when the call is a permitted duplicate and raises otherwise.
"""

from __future__ import annotations

from typing import Literal

from promises.errors import InvariantViolation, PromiseAlreadyExists, PromiseAlreadySettled
from promises.records import Promise, State

SettleAction = Literal["resolve", "reject", "cancel"]

#: The state each settle action moves a pending promise to.
SETTLED_BY: dict[SettleAction, State] = {
    "resolve": "resolved",
    "reject": "rejected",
    "cancel": "rejected_canceled",
}


def _matches(stored: str | None, given: str | None) -> bool:
    return stored is not None and stored == given


def check_duplicate_create(current: Promise, ikey: str | None, strict: bool) -> None:
    """A create met ``current`` (already timed out if its timeout passed)."""
    if current.state == "pending":
        if _matches(current.ikey_create, ikey):
            return
    elif _matches(current.ikey_create, ikey) and not strict:
        return
    raise PromiseAlreadyExists(current.id, current.state)


def check_duplicate_settle(
    current: Promise, action: SettleAction, ikey: str | None, strict: bool
) -> None:
    """A settle met ``current``, which must already be settled (timeouts applied)."""
    if current.state == "pending":
        raise InvariantViolation(
            f"promise {current.id!r}: a settle of a pending promise is fresh, not a duplicate"
        )
    if current.state == "rejected_timedout":
        if not strict:
            return
    elif current.state == SETTLED_BY[action]:
        if _matches(current.ikey_settle, ikey):
            return
    elif _matches(current.ikey_settle, ikey) and not strict:
        return
    raise PromiseAlreadySettled(current.id, current.state)
