"""A job's state in one read: its promise, its task, and what the task waits on.

``Runtime.views(ids)`` reads every id in one query (a join of ``promises``, ``tasks``
and the awaited ``promises`` row), stores the timeouts it finds expired (so every
reader sees one outcome), and, for jobs ready to run, says whether a worker with their
kind is alive. What agents and people see of a job is derived from this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promises.database import Tx
from promises.errors import PromiseNotFound
from promises.presence import KindAvailability, WorkerInfo
from promises.records import JOB_TAG, Promise
from promises.rows import PROMISE_WIDTH, TASK_WIDTH, promise_from_row
from promises.tasks import TaskInfo

if TYPE_CHECKING:
    from promises.runtime import Runtime


@dataclass(frozen=True)
class JobView:
    #: The job or timer promise, timeouts applied.
    promise: Promise
    #: Its task; None for timers and plain promises (and jobs past retention's reach).
    task: TaskInfo | None
    #: What the task waits on (a timer, an approval, a promise), if it waits.
    waited: Promise | None
    #: For a job ready to run now: whether a worker with its kind is alive.
    worker: KindAvailability | None = None

    @property
    def id(self) -> str:
        return self.promise.id

    @property
    def kind(self) -> str | None:
        return self.promise.tags.get(JOB_TAG)

    @property
    def deadline(self) -> int | None:
        return self.promise.deadline

    @property
    def waited_on(self) -> str | None:
        """The id of the promise the job waits on now, if it waits on one."""
        return None if self.task is None else self.task.waiting_on

    def queued(self, now: int) -> bool:
        """Ready to run now and not running: never claimed yet, or claimed by a worker
        whose lease ran out (it died, or lost the store) — for a worker to take it."""
        task = self.task
        if not self.promise.pending or task is None or task.waiting_on is not None:
            return False
        if task.state == "claimed":
            return task.lease_expires_at is not None and task.lease_expires_at <= now
        return task.state == "ready" and task.ready_at <= now


def _split(row: Any) -> tuple[Promise, TaskInfo | None, Promise | None]:
    p = row[:PROMISE_WIDTH]
    t = row[PROMISE_WIDTH : PROMISE_WIDTH + TASK_WIDTH]
    w = row[PROMISE_WIDTH + TASK_WIDTH :]
    return (
        promise_from_row(p),
        None if t[0] is None else TaskInfo.from_row(t),
        None if w[1] is None else promise_from_row(w),
    )


def _read_tx(runtime: Runtime, tx: Tx, ids: list[str]) -> list[Any]:
    sql = runtime.store.sql
    return tx.all(sql.views, {"ids": sql.ids(ids)})


def _expired(runtime: Runtime, rows: list[Any]) -> list[str]:
    now = runtime.store.clock()
    found = []
    for row in rows:
        promise, _task, waited = _split(row)
        for p in (promise, waited):
            if p is not None and p.pending and now >= p.timeout_at:
                found.append(p.id)
    return found


def _assemble(
    runtime: Runtime, rows: list[Any], ids: list[str], workers: list[WorkerInfo] | None
) -> dict[str, JobView]:
    now = runtime.store.clock()
    views = {}
    for row in rows:
        promise, task, waited = _split(row)
        views[promise.id] = JobView(promise, task, waited)
    queued = {v.kind for v in views.values() if v.kind and v.queued(now)}
    if queued:
        available = runtime.presence.availability(queued, workers)
        for key, view in views.items():
            if view.kind in available and view.queued(now):
                views[key] = JobView(view.promise, view.task, view.waited, available[view.kind])
    return {i: views[i] for i in ids if i in views}


def views(runtime: Runtime, ids: Sequence[str]) -> dict[str, JobView]:
    store = runtime.store
    wanted = store._check_ids(ids)
    rows = store.db.read(lambda tx: _read_tx(runtime, tx, wanted))
    expired = _expired(runtime, rows)
    if expired:
        store.db.write(lambda tx: store.persist_timeouts_tx(tx, expired, store.clock()))
        rows = store.db.read(lambda tx: _read_tx(runtime, tx, wanted))
    return _assemble(runtime, rows, wanted, None)


async def aviews(runtime: Runtime, ids: Sequence[str]) -> dict[str, JobView]:
    store = runtime.store
    wanted = store._check_ids(ids)
    rows = await store.db.aread(lambda tx: _read_tx(runtime, tx, wanted))
    expired = _expired(runtime, rows)
    if expired:
        await store.db.awrite(lambda tx: store.persist_timeouts_tx(tx, expired, store.clock()))
        rows = await store.db.aread(lambda tx: _read_tx(runtime, tx, wanted))
    workers = None
    if any(_split(r)[0].pending for r in rows):
        workers = await runtime.presence.aworkers()  # cached; one read for a whole page
    return _assemble(runtime, rows, wanted, workers)


def view(runtime: Runtime, id: str) -> JobView:
    found = views(runtime, [id])
    if id not in found:
        raise PromiseNotFound(id)
    return found[id]
