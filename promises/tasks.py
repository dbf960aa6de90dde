"""Tasks and leases: which pending job may run where, fenced against stale owners.

A pending job promise has one task row. Its life::

    ready ──claim (counter+1, lease)──▶ claimed ──job settles──▶ done
      ▲                                   │
      └──suspend (ready_at, waiting_on)───┘   (also: lease expired or owner dead)

* A task is claimable when it is ``ready`` and its ``ready_at`` has come, or
  ``claimed`` with an expired lease — and its ``kind`` is one the worker has loaded.
  Claims are atomic (``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write
  lock) and take many tasks at once.
* Every write an owner makes is fenced: it carries the counter it claimed with; after
  another claim the counter has moved and the write is refused with ``LeaseLost``.
* When a promise settles, the database (a trigger, see ``schema.py``) marks its own
  task done and makes every task waiting on it ready — whoever settled it.
* A task suspending on a promise locks that promise first (``FOR SHARE`` on
  PostgreSQL), then writes ``waiting_on``: a settle racing with it either commits
  first (and the suspend sees it settled) or waits for the suspend to commit (and its
  trigger then sees the waiting task). No wake-up is lost in between. A promise the
  suspend itself creates (a sleeping job's timer) needs no lock: no one else can see
  it before the suspend commits. On PostgreSQL that create and the suspend are one
  statement.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from promises.database import First, Statement, Tx
from promises.errors import InvariantViolation, LeaseLost
from promises.records import TIMER_TAG, Promise, Transition, Value
from promises.rows import progress_from_text, promise_from_row
from promises.store import NewPromise, SqlStore
from promises.transitions import SETTLED_BY, SettleAction
from promises.validation import dumps_mapping

_NO_TAGS: MappingProxyType[str, str] = MappingProxyType({})

TaskState = Literal["ready", "claimed", "done"]


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
    kind: str


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A finished step as it is written: a settled child of its job. Its name, start
    and arguments are in ``param``'s headers, its attempts in ``value``'s."""

    id: str
    action: Literal["resolve", "reject"]
    param: Value
    value: Value

    def recorded(self, timeout_at: int, now: int) -> Promise:
        """The step as the database holds it once written at ``now``."""
        return Promise(
            id=self.id, state=SETTLED_BY[self.action], param=self.param, value=self.value,
            timeout_at=timeout_at, tags=_NO_TAGS, ikey_create=self.id, ikey_settle=self.id,
            created_at=now, settled_at=now,
        )  # fmt: skip

    def record_tx(self, tx: Tx, store: SqlStore, timeout_at: int) -> Promise:
        """Write it the general way (the store checks a record already there)."""
        return store.record_tx(tx, self.id, self.action, self.param, self.value,
                               timeout_at=timeout_at)  # fmt: skip


@dataclass(frozen=True)
class Progress:
    message: str
    fraction: float | None
    at: int


@dataclass(frozen=True)
class TaskInfo:
    id: str
    kind: str
    state: TaskState
    ready_at: int
    waiting_on: str | None
    owner: str | None
    attempts: int
    step_id: str | None
    step_attempt: int
    progress: Progress | None
    updated_at: int
    lease_expires_at: int | None

    @classmethod
    def from_row(cls, row: Any) -> TaskInfo:
        (id, kind, state, ready_at, waiting_on, owner, attempts, step_id, step_attempt,
         progress, updated_at, lease_expires_at, _counter) = row  # fmt: skip
        loaded = progress_from_text(progress)
        return cls(
            id, kind, state, ready_at, waiting_on, owner, attempts, step_id, step_attempt,
            None if loaded is None
            else Progress(str(loaded["message"]), loaded.get("fraction"), int(loaded["at"])),
            updated_at, lease_expires_at,
        )  # fmt: skip


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
        self.sql = store.sql

    # -- units -------------------------------------------------------------------------

    def add_tx(
        self,
        tx: Tx,
        job_id: str,
        kind: str,
        ready_at: int,
        *,
        owner: Owner | None = None,
        lease_ms: int = 0,
    ) -> Claim | None:
        """The task of a new job; claimed at once by ``owner`` when given (a job started
        where a worker has room runs there without a claim round trip)."""
        now = self.store.clock()
        claimed = owner is not None
        tx.execute(
            self.sql.insert_task,
            {
                "id": job_id, "kind": kind, "state": "claimed" if claimed else "ready",
                "ready_at": ready_at, "owner": owner.id if owner else None,
                "owner_host": owner.host if owner else None,
                "owner_pid": owner.pid if owner else None,
                "lease_expires_at": now + lease_ms if claimed else None,
                "counter": 1 if claimed else 0, "attempts": 1 if claimed else 0, "now": now,
            },
        )  # fmt: skip
        if not claimed:
            tx.ready(kind, ready_at if ready_at > now else None)
        return Claim(job_id, 1, 1, None, 0, kind) if claimed else None

    def fence_tx(self, tx: Tx, claim: Claim) -> None:
        """Refuse the rest of this unit unless ``claim`` still holds the task."""
        params = {"id": claim.id, "counter": claim.counter, "now": self.store.clock()}
        if tx.execute(self.sql.fence, params) != 1:
            raise LeaseLost(claim.id)

    def claim_tx(
        self, tx: Tx, owner: Owner, kinds: Collection[str], limit: int, lease_ms: int
    ) -> list[tuple[Claim, Promise, int]]:
        """Claim up to ``limit`` due tasks of ``kinds``: each with its job and the time
        it became ready."""
        now = self.store.clock()
        wanted = self.sql.ids(sorted(kinds))
        ids: list[str] = []
        for candidates in (self.sql.ready_ids, self.sql.expired_ids):
            room = limit - len(ids)
            if room <= 0:
                break
            params = {"now": now, "kinds": wanted, "limit": room}
            ids += [r[0] for r in tx.all(candidates, params)]
        if not ids:
            return []
        rows = tx.all(
            self.sql.claim,
            {"ids": self.sql.ids(ids), "owner": owner.id, "host": owner.host, "pid": owner.pid,
             "lease_end": now + lease_ms, "now": now},
        )  # fmt: skip
        if len(rows) != len(ids):
            raise InvariantViolation(f"claimed {len(rows)} tasks of the {len(ids)} selected")
        claims = {row[0]: (Claim(*row[:6]), row[6]) for row in rows}
        jobs = tx.all(self.sql.get_many, {"ids": self.sql.ids(ids)})
        by_id = {p.id: p for p in map(promise_from_row, jobs)}
        return [(claims[i][0], by_id[i], claims[i][1]) for i in ids if i in by_id]

    def wait_tx(
        self, tx: Tx, claim: Claim, ready_at: int, waiting_on: str | None,
        create: NewPromise | None, first: First | None = None,
    ) -> None:  # fmt: skip
        """Give the task back until ``ready_at``, or until ``waiting_on`` settles, first
        creating ``create`` (the timer of a job going to sleep) if given. ``first``: the
        unit declared ``sleep_statement``'s as its first (made once)."""
        created = None
        if create is not None:
            statements = tx.statements
            fast = (
                first() if first is not None
                else self.sleep_statement(claim, create, ready_at, waiting_on)
            )  # fmt: skip
            if self._sleep_fast_tx(tx, claim, fast):
                return
            # A unit alone may run in autocommit (``Database.write``): its first
            # statement must write nothing when more follow. So this one only looks
            # whether the claim still holds; ``suspend_tx`` fences again, in the
            # transaction that creates the timer.
            if (
                self.sql.sleep_job
                and tx.statements == statements
                and tx.scalar(self.sql.held, {"id": claim.id, "counter": claim.counter}) != 1
            ):
                raise LeaseLost(claim.id)
            made = self.store.create_tx(tx, create)
            created = made.promise if made.fresh else None
        self.suspend_tx(tx, claim, ready_at, waiting_on, created)

    def suspend_tx(
        self, tx: Tx, claim: Claim, ready_at: int, waiting_on: str | None,
        created: Promise | None = None,
    ) -> None:  # fmt: skip
        """Give the task back until ``ready_at``, or until ``waiting_on`` settles.
        ``created``: the promise this transaction made for it to wait on, if it did."""
        now = self.store.clock()
        if created is not None and created.id == waiting_on:
            # Made in this transaction: no one else can settle it before we commit.
            if not created.pending:
                ready_at = now
        elif waiting_on is not None:
            # Lock the awaited promise first: see the module's docstring.
            state = tx.scalar(self.sql.lock_promise, {"id": waiting_on})
            if state != "pending":
                ready_at = now  # settled while we were suspending
        params = {"id": claim.id, "counter": claim.counter, "ready_at": ready_at,
                  "waiting_on": waiting_on, "now": now}  # fmt: skip
        if tx.execute(self.sql.suspend, params) != 1:
            raise LeaseLost(claim.id)
        tx.ready(claim.kind, ready_at if ready_at > now else None)

    def note_step_failure_tx(self, tx: Tx, claim: Claim, step_id: str, attempt: int) -> None:
        params = {"id": claim.id, "counter": claim.counter, "step_id": step_id,
                  "attempt": attempt, "now": self.store.clock()}  # fmt: skip
        if tx.execute(self.sql.note_step_failure, params) != 1:
            raise LeaseLost(claim.id)

    def set_progress_tx(self, tx: Tx, claim: Claim, message: str, fraction: float | None) -> None:
        progress = json.dumps({"message": message, "fraction": fraction, "at": self.store.clock()})
        params = {"id": claim.id, "counter": claim.counter, "progress": progress}
        tx.execute(self.sql.set_progress, params)

    def heartbeat_tx(
        self, tx: Tx, owner: Owner, lease_ms: int, ids: Sequence[str]
    ) -> set[tuple[str, int]]:
        """Extend the leases ``owner`` holds on the tasks ``ids`` (those it runs); returns
        them as ``(id, counter)``. A task claimed by ``owner`` that it does not run (a
        claim whose commit it never heard of: the connection broke) is not extended: its
        lease runs out and another claim runs it."""
        now = self.store.clock()
        params = {"owner": owner.id, "lease_end": now + lease_ms, "ids": self.sql.ids(ids)}
        rows = tx.all(self.sql.heartbeat, params)
        tx.execute(self.sql.worker_seen, {"id": owner.id, "now": now})
        return {(r[0], r[1]) for r in rows}

    # -- PostgreSQL: a job's common writes in one statement each --------------------------

    def start_statement(
        self, new: NewPromise, kind: str, ready_at: int, owner: Owner | None, lease_ms: int
    ) -> Statement | None:
        """PostgreSQL: the statement that creates a job's promise, tags and task in one
        round trip (``start_fast_tx`` runs it); None on SQLite."""
        if not self.sql.start_job:
            return None
        now = self.store.clock()
        claimed = owner is not None
        return Statement(
            self.sql.start_job,
            {
                "id": new.id, "timer": new.tags.get(TIMER_TAG) == "true",
                "param_headers": dumps_mapping(new.param.headers), "param_data": new.param.data,
                "timeout_at": new.timeout_at, "tags": dumps_mapping(new.tags),
                "ikey_create": new.ikey, "now": now,
                "tag_keys": list(new.tags), "tag_values": list(new.tags.values()),
                "kind": kind, "task_state": "claimed" if claimed else "ready",
                "ready_at": ready_at, "owner": owner.id if owner else None,
                "owner_host": owner.host if owner else None,
                "owner_pid": owner.pid if owner else None,
                "lease_expires_at": now + lease_ms if claimed else None,
                "counter": 1 if claimed else 0, "attempts": 1 if claimed else 0,
            },
        )  # fmt: skip

    def start_fast_tx(
        self, tx: Tx, statement: Statement, new: NewPromise, kind: str, ready_at: int
    ) -> tuple[Transition, Claim | None] | None:
        """Run ``statement`` (``start_statement``'s): the job is made in one round trip;
        None if the id is taken (the caller then takes the general path, which tells
        why)."""
        now, claimed = statement.params["now"], statement.params["owner"] is not None
        seq = tx.scalar(*statement)
        if seq is None:
            return None
        if not claimed:
            tx.ready(kind, ready_at if ready_at > now else None)
        promise = self.store.created(new, now)
        if promise.timeout_at <= now:  # made already past its deadline
            promise = self.store.persist_timeouts_tx(tx, [new.id], now)[new.id]
        claim = Claim(new.id, 1, 1, None, 0, kind) if claimed else None
        return Transition(promise, fresh=True), claim

    def sleep_statement(
        self, claim: Claim, timer: NewPromise, ready_at: int, waiting_on: str | None
    ) -> Statement | None:
        """PostgreSQL, a job going to sleep: the statement that creates its timer and
        gives its task back until the timer is due, in one round trip (fenced: a stale
        owner writes nothing). None when there is none (SQLite, a timer due already)."""
        now = self.store.clock()
        if (
            not self.sql.sleep_job
            or waiting_on != timer.id
            or ready_at != timer.timeout_at
            or ready_at <= now
        ):
            return None
        return Statement(
            self.sql.sleep_job,
            {
                "timer_id": timer.id, "timer": timer.tags.get(TIMER_TAG) == "true",
                "param_headers": dumps_mapping(timer.param.headers),
                "param_data": timer.param.data, "tags": dumps_mapping(timer.tags),
                "ikey_create": timer.ikey, "now": now, "ready_at": ready_at,
                "tag_keys": list(timer.tags), "tag_values": list(timer.tags.values()),
                "id": claim.id, "counter": claim.counter,
            },
        )  # fmt: skip

    def _sleep_fast_tx(self, tx: Tx, claim: Claim, statement: Statement | None) -> bool:
        """Run ``statement`` (``sleep_statement``'s). False when there is none or the
        timer exists: nothing was written, the general path follows."""
        if statement is None:
            return False
        fenced, seq, suspended = tx.one(*statement)
        if not fenced:
            raise LeaseLost(claim.id)
        if seq is None:
            return False
        if suspended != 1:
            raise InvariantViolation(
                f"job {claim.id!r} made its timer but its task, locked, was not suspended"
            )
        tx.ready(claim.kind, statement.params["ready_at"])
        return True

    def record_step_tx(self, tx: Tx, claim: Claim, step: StepRecord, timeout_at: int) -> Promise:
        """Fence, and write a finished step, in one statement; the step as recorded."""
        now = self.store.clock()
        param, value = step.param, step.value
        fenced, seq = tx.one(
            self.sql.record_step,
            {
                "job": claim.id, "counter": claim.counter, "now": now, "id": step.id,
                "state": SETTLED_BY[step.action], "param_headers": dumps_mapping(param.headers),
                "param_data": param.data, "value_headers": dumps_mapping(value.headers),
                "value_data": value.data, "timeout_at": timeout_at,
            },
        )  # fmt: skip
        if not fenced:
            raise LeaseLost(claim.id)
        if seq is None:  # recorded before (a replay's race): the store settles who won
            return step.record_tx(tx, self.store, timeout_at)
        recorded = step.recorded(timeout_at, now)
        tx.settled[step.id] = recorded
        return recorded

    def finish_statement(
        self, claim: Claim, action: SettleAction, value: Value, ikey: str,
        steps: list[StepRecord], steps_timeout_at: int,
    ) -> Statement | None:  # fmt: skip
        """PostgreSQL: the statement that fences, writes the job's last finished
        ``steps`` and settles the job, in one round trip (``finish_tx`` runs it); None
        on SQLite."""
        if not self.sql.finish_job:
            return None
        return Statement(
            self.sql.finish_job,
            {"id": claim.id, "counter": claim.counter, "now": self.store.clock(),
             "state": SETTLED_BY[action], "headers": dumps_mapping(value.headers),
             "data": value.data, "ikey": ikey, "steps_timeout_at": steps_timeout_at,
             "step_ids": [step.id for step in steps],
             "step_states": [SETTLED_BY[step.action] for step in steps],
             "step_param_headers": [dumps_mapping(step.param.headers) for step in steps],
             "step_param_data": [step.param.data for step in steps],
             "step_value_headers": [dumps_mapping(step.value.headers) for step in steps],
             "step_value_data": [step.value.data for step in steps]},
        )  # fmt: skip

    def finish_tx(
        self, tx: Tx, claim: Claim, action: SettleAction, value: Value, ikey: str,
        steps: list[StepRecord], steps_timeout_at: int, first: First | None = None,
    ) -> tuple[Transition, list[Promise]]:  # fmt: skip
        """PostgreSQL: fence, write the job's last finished ``steps`` and settle the job,
        in one statement; the job's transition and the steps as recorded. ``first``:
        the unit declared ``finish_statement``'s as its first (made once)."""
        statement = (
            first() if first is not None
            else self.finish_statement(claim, action, value, ikey, steps, steps_timeout_at)
        )  # fmt: skip
        if statement is None:
            raise InvariantViolation("finish_tx runs on PostgreSQL only")
        now = statement.params["now"]
        found = tx.one(*statement)
        fenced, kinds, inserted, settled = found[0], found[1], found[2], found[3:]
        if not fenced:
            raise LeaseLost(claim.id)
        written = set(inserted or ())
        recorded = []
        for step in steps:
            if step.id in written:
                recorded.append(step.recorded(steps_timeout_at, now))
                tx.settled[step.id] = recorded[-1]
            else:  # recorded before (a replay's race): the store settles who won
                recorded.append(step.record_tx(tx, self.store, steps_timeout_at))
        if settled[0] is None:  # past its deadline, or settled meanwhile: the general path
            return self.store.settle_tx(tx, claim.id, action, value=value, ikey=ikey), recorded
        promise = promise_from_row(settled)
        tx.settled[claim.id] = promise
        for kind in kinds or ():
            tx.ready(kind)
        return Transition(promise, fresh=True), recorded

    # -- operations ----------------------------------------------------------------------

    async def claim(
        self, owner: Owner, kinds: Collection[str], limit: int, lease_ms: int
    ) -> list[tuple[Claim, Promise, int]]:
        claims = await self.store.db.awrite(
            lambda tx: self.claim_tx(tx, owner, kinds, limit, lease_ms), durable=False
        )
        if len(claims) > limit:
            raise InvariantViolation(f"claimed {len(claims)} tasks when asked for at most {limit}")
        return claims

    async def suspend(self, claim: Claim, ready_at: int, waiting_on: str | None) -> None:
        await self.store.db.awrite(
            lambda tx: self.suspend_tx(tx, claim, ready_at, waiting_on), durable=False
        )

    async def release(self, claim: Claim) -> None:
        """Hand the task back, claimable at once (a worker shutting down)."""
        await self.suspend(claim, self.store.clock(), None)

    async def heartbeat(
        self, owner: Owner, lease_ms: int, ids: Sequence[str]
    ) -> set[tuple[str, int]]:
        return await self.store.db.awrite(
            lambda tx: self.heartbeat_tx(tx, owner, lease_ms, ids), durable=False
        )

    async def next_due(self, kinds: Collection[str]) -> tuple[int | None, int | None, int | None]:
        """When the next task of these kinds is ready, the next lease of one ends, and
        the next cron tick is due (ms; None: none)."""
        wanted = self.sql.ids(sorted(kinds))
        row = await self.store.db.aread(lambda tx: tx.one(self.sql.next_due, {"kinds": wanted}))
        return row[0], row[1], row[2]

    async def reclaim_dead_owners(self, owner: Owner) -> int:
        """Expire at once the leases held by processes on this host that have died."""
        params = {"host": owner.host, "owner": owner.id}
        rows = await self.store.db.aread(lambda tx: tx.all(self.sql.claimed_on_host, params))
        dead = [
            (tid, counter) for tid, counter, pid in rows if pid is not None and not _pid_alive(pid)
        ]
        if not dead:
            return 0

        def unit(tx: Tx) -> int:
            for tid, counter in dead:
                tx.execute(self.sql.expire_lease, {"id": tid, "counter": counter})
            tx.ready(None)
            return len(dead)

        return await self.store.db.awrite(unit, durable=False)

    def ready_count(self) -> int:
        """How many tasks are ready to run now (the ready queue's depth), all kinds."""
        now = self.store.clock()
        return int(self.store.db.read(lambda tx: tx.scalar(self.sql.ready_count, {"now": now})))

    def get(self, task_id: str) -> TaskInfo | None:
        row = self.store.db.read(lambda tx: tx.one(self.sql.task, {"id": task_id}))
        return None if row is None else TaskInfo.from_row(row)
