"""Tasks and leases: which pending job may run where, fenced against stale owners.

A pending job promise has one task row. Its life::

    ready ──claim (counter+1, lease)──▶ claimed ──job settles──▶ done
      ▲                                   │
      └──suspend (ready_at, waiting_on)───┘   (also: lease expired or owner dead)

* ``claim`` takes ready tasks whose ``ready_at`` has come, and claimed tasks whose lease
  expired, atomically (``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)``).
* Every write an owner makes (``fence_in``) carries the counter it claimed with; after
  another claim the counter has moved and the write is refused with ``LeaseLost``.
* When a promise settles, the store's settle hook (``on_settled``) marks its own task
  done and makes every task waiting on it ready — in the settling transaction.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, select, update

from promises.errors import InvariantViolation, PromiseError
from promises.schema import promises_table, tasks_table
from promises.store import SqlStore

_t = tasks_table
#: The notifier key a worker listens on: some task may have become claimable.
TASKS_KEY = "promises:tasks"

_FENCE = (
    update(_t)
    .where(
        _t.c.id == bindparam("b_id"),
        _t.c.counter == bindparam("b_counter"),
        _t.c.state == "claimed",
    )
    .values(updated_at=bindparam("b_now"))
)
_FINISH = (
    update(_t)
    .where(_t.c.id.in_(bindparam("b_ids", expanding=True)), _t.c.state != "done")
    .values(state="done", owner=None, lease_expires_at=None, updated_at=bindparam("b_now"))
)
_WAKE_WAITERS = (
    update(_t)
    .where(_t.c.waiting_on.in_(bindparam("b_ids", expanding=True)), _t.c.state == "ready")
    .values(ready_at=bindparam("b_now"), updated_at=bindparam("b_now"))
)
# Claims lock the ids first, then update exactly those: on PostgreSQL an
# ``IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` may be re-evaluated and claim more.
_READY_IDS = (
    select(_t.c.id)
    .where(_t.c.state == "ready", _t.c.ready_at <= bindparam("b_now"))
    .order_by(_t.c.ready_at)
    .limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True)
)
_EXPIRED_IDS = (
    select(_t.c.id)
    .where(_t.c.state == "claimed", _t.c.lease_expires_at <= bindparam("b_now"))
    .limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True)
)
_CLAIM = (
    update(_t)
    .where(_t.c.id.in_(bindparam("b_ids", expanding=True)))
    .values(
        state="claimed",
        owner=bindparam("b_owner"),
        owner_host=bindparam("b_host"),
        owner_pid=bindparam("b_pid"),
        lease_expires_at=bindparam("b_lease_end"),
        counter=_t.c.counter + 1,
        attempts=_t.c.attempts + 1,
        waiting_on=None,
        updated_at=bindparam("b_now"),
    )
    .returning(_t.c.id, _t.c.counter, _t.c.attempts, _t.c.step_id, _t.c.step_attempt)
)
_NEXT_READY = select(
    select(func.min(_t.c.ready_at)).where(_t.c.state == "ready").scalar_subquery(),
    select(func.min(_t.c.lease_expires_at)).where(_t.c.state == "claimed").scalar_subquery(),
)


class LeaseLost(PromiseError):
    """This worker no longer owns the task (another claimed it, or the job settled)."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(
            f"task {task_id!r} is no longer held by this worker (its lease expired and "
            "another worker claimed it, or its job was settled); its writes were refused"
        )


@dataclass(frozen=True)
class Owner:
    id: str
    host: str
    pid: int

    @classmethod
    def here(cls) -> Owner:
        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}:{pid}:{uuid.uuid4().hex[:8]}", host, pid)


@dataclass(frozen=True)
class Claim:
    id: str
    counter: int
    attempts: int
    step_id: str | None
    step_attempt: int


@dataclass(frozen=True)
class TaskInfo:
    id: str
    state: str
    ready_at: int
    waiting_on: str | None
    owner: str | None
    attempts: int
    progress: str | None
    updated_at: int


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Tasks:
    def __init__(self, store: SqlStore) -> None:
        self.store = store
        if self.on_settled not in store.settle_hooks:
            store.settle_hooks.append(self.on_settled)

    # -- inside other transactions ----------------------------------------------------

    def add_in(self, conn: Connection, job_id: str, ready_at: int) -> None:
        stmt = self.store.backend.insert(_t).on_conflict_do_nothing(index_elements=["id"])
        conn.execute(
            stmt,
            {"id": job_id, "state": "ready", "ready_at": ready_at, "counter": 0, "attempts": 0,
             "step_attempt": 0, "updated_at": self.store.clock()},
        )  # fmt: skip
        self.store.notify_after_commit(conn, [TASKS_KEY])

    def fence_in(self, conn: Connection, claim: Claim) -> None:
        """Refuse the rest of this transaction unless ``claim`` still holds the task."""
        result = conn.execute(
            _FENCE, {"b_id": claim.id, "b_counter": claim.counter, "b_now": self.store.clock()}
        )
        if result.rowcount != 1:
            raise LeaseLost(claim.id)

    def on_settled(self, conn: Connection, ids: list[str], now: int) -> None:
        conn.execute(_FINISH, {"b_ids": ids, "b_now": now})
        if conn.execute(_WAKE_WAITERS, {"b_ids": ids, "b_now": now}).rowcount:
            self.store.notify_after_commit(conn, [TASKS_KEY])

    # -- owner operations -------------------------------------------------------------

    def claim(self, owner: Owner, limit: int, lease_ms: int) -> list[Claim]:
        now = self.store.clock()
        params = {"b_now": now, "b_owner": owner.id, "b_host": owner.host, "b_pid": owner.pid,
                  "b_lease_end": now + lease_ms}  # fmt: skip
        claims: list[Claim] = []
        with self.store.transaction(durable=False) as conn:
            for candidates in (_READY_IDS, _EXPIRED_IDS):
                wanted = limit - len(claims)
                if wanted <= 0:
                    break
                ids = list(conn.execute(candidates, {"b_now": now, "b_limit": wanted}).scalars())
                if ids:
                    rows = conn.execute(_CLAIM, {**params, "b_ids": ids}).all()
                    claims += [Claim(*row) for row in rows]
        if len(claims) > limit:
            raise InvariantViolation(f"claimed {len(claims)} tasks when asked for at most {limit}")
        return claims

    def suspend(self, claim: Claim, ready_at: int, waiting_on: str | None) -> None:
        """Give the task back until ``ready_at``, or until ``waiting_on`` settles."""
        with self.store.transaction(durable=False) as conn:
            self.fence_in(conn, claim)
            if waiting_on is not None:
                state = conn.execute(
                    select(promises_table.c.state, promises_table.c.timeout_at).where(
                        promises_table.c.id == waiting_on
                    )
                ).first()
                if state is None or state[0] != "pending":
                    ready_at = self.store.clock()  # settled while we were suspending
            conn.execute(
                update(_t)
                .where(_t.c.id == claim.id, _t.c.counter == claim.counter)
                .values(
                    state="ready",
                    ready_at=ready_at,
                    waiting_on=waiting_on,
                    owner=None,
                    lease_expires_at=None,
                    updated_at=self.store.clock(),
                )
            )
            self.store.notify_after_commit(conn, [TASKS_KEY])

    def note_step_failure_in(
        self, conn: Connection, claim: Claim, step_id: str, attempt: int
    ) -> None:
        conn.execute(
            update(_t)
            .where(_t.c.id == claim.id, _t.c.counter == claim.counter)
            .values(step_id=step_id, step_attempt=attempt)
        )

    def heartbeat(self, claims: list[Claim], lease_ms: int) -> list[Claim]:
        """Extend the leases of ``claims``; returns the ones this worker has lost."""
        if not claims:
            return []
        now = self.store.clock()
        lost = []
        with self.store.transaction(durable=False) as conn:
            for claim in claims:
                result = conn.execute(
                    update(_t)
                    .where(
                        _t.c.id == claim.id, _t.c.counter == claim.counter, _t.c.state == "claimed"
                    )
                    .values(lease_expires_at=now + lease_ms, updated_at=now)
                )
                if result.rowcount != 1:
                    lost.append(claim)
        return lost

    def set_progress(self, claim: Claim, progress: str) -> None:
        with self.store.transaction(durable=False) as conn:
            conn.execute(
                update(_t)
                .where(_t.c.id == claim.id, _t.c.counter == claim.counter)
                .values(progress=progress)
            )

    def reclaim_dead_owners(self, owner: Owner) -> int:
        """Expire at once the leases held by processes on this host that have died."""
        with self.store.read() as conn:
            rows = conn.execute(
                select(_t.c.id, _t.c.counter, _t.c.owner_pid).where(
                    _t.c.state == "claimed", _t.c.owner_host == owner.host, _t.c.owner != owner.id
                )
            ).all()
        dead = [
            (tid, counter) for tid, counter, pid in rows if pid is not None and not _pid_alive(pid)
        ]
        if not dead:
            return 0
        with self.store.transaction(durable=False) as conn:
            for tid, counter in dead:
                conn.execute(
                    update(_t)
                    .where(_t.c.id == tid, _t.c.counter == counter, _t.c.state == "claimed")
                    .values(lease_expires_at=0)
                )
            self.store.notify_after_commit(conn, [TASKS_KEY])
        return len(dead)

    # -- reads ------------------------------------------------------------------------

    def next_ready_at(self) -> int | None:
        """When the next task becomes claimable (a ready time or a lease's end)."""
        with self.store.read() as conn:
            ready, lease = conn.execute(_NEXT_READY).one()
        times = [t for t in (ready, lease) if t is not None]
        return min(times) if times else None

    def get(self, task_id: str) -> TaskInfo | None:
        with self.store.read() as conn:
            row = conn.execute(
                select(
                    _t.c.id, _t.c.state, _t.c.ready_at, _t.c.waiting_on, _t.c.owner,
                    _t.c.attempts, _t.c.progress, _t.c.updated_at,
                ).where(_t.c.id == task_id)
            ).first()  # fmt: skip
        return None if row is None else TaskInfo(*row)
