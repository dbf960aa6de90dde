"""Upkeep: storing the timeouts of promises nobody looked at, and retention.

Neither is needed for correctness from moment to moment (every read stores a timeout
it sees), so workers run them rarely and read first: an idle store takes no write lock.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from promises.database import Tx
from promises.errors import InvalidArgument
from promises.validation import check_timestamp

if TYPE_CHECKING:
    from promises.store import SqlStore


def sweep(store: SqlStore, now: int | None = None, *, batch: int = 500) -> int:
    """Store the timeout of every pending promise expired at ``now``; returns how many."""
    when = store.clock() if now is None else check_timestamp(now, "now")

    def unit(tx: Tx) -> int:
        ids = [r[0] for r in tx.all(store.sql.sweep, {"now": when, "batch": batch})]
        if ids:
            tx.settled.update(dict.fromkeys(ids))
            tx.ready(None)
        return len(ids)

    total = 0
    while True:
        # Not flushed on its own: a lost timeout is derived again from timeout_at.
        count = store.db.write(unit, durable=False)
        total += count
        if count < batch:
            return total


def sweep_if_needed(store: SqlStore, now: int) -> int:
    """Sweep only if a read finds something to sweep."""
    found = store.db.read(lambda tx: tx.one(store.sql.any_expired, {"now": now}))
    return sweep(store, now) if found is not None else 0


def collect(store: SqlStore, max_age: timedelta | None = None, *, batch: int = 1000) -> int:
    """Delete promises settled more than ``max_age`` (default: the store's retention)
    ago. Their idempotency keys are forgotten with them; returns how many went."""
    age = store.retention if max_age is None else max_age
    if not isinstance(age, timedelta):
        raise InvalidArgument(
            f"max_age must be a timedelta (e.g. timedelta(days=7)), got {age!r:.40}"
        )
    if age < timedelta(0):
        raise InvalidArgument(f"max_age must not be negative, got {age}")
    now = store.clock()
    sweep(store, now)
    cutoff = now - int(age.total_seconds() * 1000)

    def unit(tx: Tx) -> int:
        return tx.execute(store.sql.collect, {"cutoff": cutoff, "batch": batch})

    total = 0
    while True:
        count = store.db.write(unit, durable=False)
        total += count
        if count < batch:
            return total
