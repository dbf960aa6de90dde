"""The runtime: starts jobs, and runs (or replays) claimed ones to their end.

Workers (``promises.worker``) claim tasks and call ``Runtime.execute``; the job
function gets a ``promises.context.Context``. See ``promises.functions`` for
``@durable``. A job started in a process whose worker has room (and has its kind) is
claimed by that worker in the same transaction that creates it, and runs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from promises.codec import ErrorInfo, StoredError, from_json, to_json
from promises.context import Context, Interrupted, JobStopped, Run, Suspend, ms
from promises.database import First, Tx
from promises.errors import (
    InvalidArgument,
    JobConflict,
    LeaseLost,
    NotSerializable,
    OutcomeUnknown,
    PromiseAlreadyExists,
    PromiseError,
    StoreUnavailable,
    UnknownJob,
)
from promises.functions import REGISTRY, DurableFunction, lookup, validated_arguments
from promises.observe import NullObserver, Observer, emit
from promises.presence import Presence, WorkerInfo
from promises.records import (
    JOB_TAG,
    NO_DEADLINE,
    STEP_TAG,
    TIMER_TAG,
    Promise,
    Transition,
    Value,
    timed_out_at,
)
from promises.rows import promise_from_row
from promises.store import NewPromise, SqlStore
from promises.tasks import Claim, Owner, TaskInfo, Tasks
from promises.validation import check_id, check_job_id, check_seconds, check_timestamp
from promises.views import JobView, aviews, view, views

log = logging.getLogger("promises.runtime")
T = TypeVar("T")


#: Our own generator for ids: seeded from the OS here and again in a forked child,
#: and out of reach of code that seeds the shared ``random`` (a job's own
#: ``random.seed(1)`` must not make the next generated id repeat an old one).
_IDS = random.Random()
os.register_at_fork(after_in_child=_IDS.seed)


def new_id() -> str:
    """128 random bits in hex, for an id nobody chose. Ids need to be unique, not
    secret (nothing is granted by knowing one), so Python's generator serves:
    ``uuid4`` reads the OS's, and the system call gives up the GIL on the event loop,
    where getting it back cost 90 µs a job under load (py-spy, bench/mcp.py)."""
    return f"{_IDS.getrandbits(128):032x}"


def _ended_by_a_flushed_commit(job: Promise) -> bool:
    """Whether ``job`` ended in a flushed commit: the worker's finish, or a settle or
    cancel through the store. One that timed out did not: it may be so only as read, or
    stored by the sweep without a flush (a job tagged as a timer resolves so)."""
    if job.pending or job.state == "rejected_timedout":
        return False
    return not (job.timer and job.settled_at == timed_out_at(job))


#: The part of a child id after its job's id and the dot: ``3`` or ``1.0``.
_CHILD_SUFFIX = re.compile(r"[0-9]+(\.[0-9]+)*")


class LocalWorker(Protocol):
    """What the runtime needs of a worker in its process to hand it new jobs."""

    owner: Owner
    lease_ms: int

    def reserve(self, kind: str) -> bool: ...

    def unreserve(self) -> None: ...

    def adopt(self, claim: Claim, job: Promise) -> None: ...


@dataclass(frozen=True)
class StartRequest:
    """A start, checked: what ``start_tx`` writes."""

    function: DurableFunction
    promise: NewPromise
    begin: int


class _StopWhenSettled:
    """Cancels a run as soon as its job settles elsewhere (cancelled here or in another
    process) or its deadline passes — unless the run itself is ending (``closing``).
    A watch and at most one timer, no task: every running job has one."""

    def __init__(
        self, store: SqlStore, job: Promise, runner: asyncio.Task[Any], closing: asyncio.Event
    ) -> None:
        self.store, self.job, self.runner, self.closing = store, job, runner, closing
        self._checking: asyncio.Task[None] | None = None
        self._unwatch = store.waiters.watch(job.id, self._check)
        self._timer: asyncio.TimerHandle | None = None
        if job.deadline is not None:
            delay = max(job.timeout_at - store.clock(), 0) / 1000
            self._timer = asyncio.get_running_loop().call_later(delay, self._check)

    def _check(self) -> None:
        if self.closing.is_set() or self.runner.done():
            return
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self._confirm())

    async def _confirm(self) -> None:
        try:
            current = await self.store.aget(self.job.id)  # stores a passed deadline
        except PromiseError:
            return  # the store is away: the run finds out by itself
        if not current.pending and not self.closing.is_set() and not self.runner.done():
            log.info("job %s was %s; stopping its run", self.job.id, current.state)
            self.runner.cancel()

    def close(self) -> None:
        self._unwatch()
        if self._timer is not None:
            self._timer.cancel()
        if self._checking is not None:
            self._checking.cancel()


class Runtime:
    """Starts jobs and runs claimed ones. Workers (``promises.worker``) drive it."""

    def __init__(
        self,
        store: SqlStore,
        registry: Mapping[str, DurableFunction] | None = None,
        *,
        observer: Observer | None = None,
    ) -> None:
        self.store = store
        self.tasks = Tasks(store)
        self.presence = Presence(store)
        self.registry = REGISTRY if registry is None else registry
        self.observer: Observer = observer or NullObserver()
        #: Set by a worker running in this process: new jobs go straight to it.
        self.local_worker: LocalWorker | None = None

    def encode(self, value: object, what: str) -> str:
        data = to_json(value, what)
        size, limit = len(data.encode()), self.store.limits.max_payload_bytes
        if size > limit:
            raise NotSerializable(
                f"{what} is {size} bytes of JSON; the limit is {limit} bytes. "
                "Store large data elsewhere and return a reference to it"
            )
        return data

    # -- starting ---------------------------------------------------------------------

    def prepare(
        self,
        fn: DurableFunction | str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        id: str | None = None,
        start_at: int | None = None,
        tags: Mapping[str, str] | None = None,
        chosen: bool = True,
    ) -> StartRequest:
        """Check a start (the function, its arguments, the id) before any write.
        ``chosen=False``: the id is derived by the runtime (a cron tick's), not chosen."""
        function = lookup(fn, self.registry) if isinstance(fn, str) else fn
        validated_arguments(function, args, kwargs)
        if id is None:
            job_id = f"{function.name.split(':')[-1]}-{new_id()}"
        else:
            job_id = check_job_id(id, "job id") if chosen else check_id(id, "job id")
        spec = self.encode(
            {"fn": function.name, "args": list(args), "kwargs": dict(kwargs)},
            f"the arguments of job {job_id!r}",
        )
        now = self.store.clock()
        begin = now if start_at is None else max(check_timestamp(start_at, "start_at"), now)
        timeout_at = (
            NO_DEADLINE
            if function.timeout is None
            else min(begin + ms(function.timeout, "timeout"), NO_DEADLINE)
        )
        new = self.store.check_create(
            job_id, timeout_at=timeout_at, param=Value(spec),
            tags={**(tags or {}), JOB_TAG: function.name},
            ikey=hashlib.sha256(spec.encode()).hexdigest()[:32],
        )  # fmt: skip
        return StartRequest(function, new, begin)

    def _start_first(self, request: StartRequest, owner: Owner | None, lease_ms: int) -> First:
        """A start's first statement, declared (``Database.write``), made once."""
        return functools.cache(
            lambda: self.tasks.start_statement(
                request.promise, request.function.name, request.begin, owner, lease_ms
            )
        )

    def start_tx(
        self, tx: Tx, request: StartRequest, owner: Owner | None = None, lease_ms: int = 0,
        first: First | None = None,
    ) -> tuple[Transition, Claim | None]:  # fmt: skip
        """Write a job's start. A one-statement unit (``Database.write``) whose first is
        ``first`` (``_start_first``): on PostgreSQL one statement writes it all, or
        nothing when the id is taken (the general path then tells why)."""
        statement = (first or self._start_first(request, owner, lease_ms))()
        if statement is not None:  # PostgreSQL: promise, tags and task in one statement
            fast = self.tasks.start_fast_tx(
                tx, statement, request.promise, request.function.name, request.begin
            )
            if fast is not None:
                return fast
        try:
            transition = self.store.create_tx(tx, request.promise)
        except PromiseAlreadyExists as exc:
            raise JobConflict(
                f"job {request.promise.id!r} already exists with other arguments or another "
                f"function (it is {exc.state}); start it with the same arguments to get it, "
                "or use a new id"
            ) from exc
        claim = None
        if transition.fresh:
            claim = self.tasks.add_tx(
                tx, request.promise.id, request.function.name, request.begin,
                owner=owner, lease_ms=lease_ms,
            )  # fmt: skip
        return transition, claim

    def _local(self, request: StartRequest) -> LocalWorker | None:
        worker = self.local_worker
        if worker is None or request.begin > self.store.clock():
            return None
        return worker if worker.reserve(request.function.name) else None

    def _started(
        self, worker: LocalWorker | None, transition: Transition, claim: Claim | None
    ) -> Transition:
        if worker is not None:
            if claim is not None:
                worker.adopt(claim, transition.promise)
            else:
                worker.unreserve()
        if transition.fresh:
            kind = transition.promise.tags.get(JOB_TAG, "")
            emit(self.observer.job_started, transition.promise.id, kind)
        return transition

    def start(
        self,
        fn: DurableFunction | str,
        *args: Any,
        id: str | None = None,
        start_at: int | None = None,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Transition:
        """Start a job (at once, or at ``start_at`` ms). Durable when this returns.
        The same ``id`` with the same arguments returns the existing job."""
        request = self.prepare(fn, args, kwargs, id=id, start_at=start_at, tags=tags)
        worker = self._local(request)
        owner, lease = (worker.owner, worker.lease_ms) if worker else (None, 0)
        first = self._start_first(request, owner, lease)
        try:
            transition, claim = self.store.db.write(
                lambda tx: self.start_tx(tx, request, owner, lease, first),
                one_statement=True, first=first,
            )  # fmt: skip
        except BaseException as exc:
            if worker is not None:
                worker.unreserve()
            if isinstance(exc, JobConflict):
                self.store.db.flush()  # it tells of a job whose start may not be flushed yet
            if isinstance(exc, OutcomeUnknown):
                raise _start_unknown(request, exc) from exc
            raise
        return self._started(worker, transition, claim)

    async def astart(
        self,
        fn: DurableFunction | str,
        *args: Any,
        id: str | None = None,
        start_at: int | None = None,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Transition:
        """``start`` for asyncio."""
        transition, _ = await self.astart_view(
            fn, *args, id=id, start_at=start_at, tags=tags, **kwargs
        )
        return transition

    async def astart_view(
        self,
        fn: DurableFunction | str,
        *args: Any,
        id: str | None = None,
        start_at: int | None = None,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[Transition, JobView | None]:
        """``astart``, and the job's view when this process knows it without reading it
        back: a new job that a worker here took at once (it runs), as ``views`` would
        read it. None otherwise (a duplicate start, or a job left for any worker)."""
        request = self.prepare(fn, args, kwargs, id=id, start_at=start_at, tags=tags)
        return await self._astart(request)

    async def astart_and_wait(
        self,
        fn: DurableFunction | str,
        *args: Any,
        wait_s: float,
        id: str | None = None,
        start_at: int | None = None,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[Transition, Promise]:
        """Start a job (as ``astart``) and wait up to ``wait_s`` seconds for it to
        settle; returns the start and the job's promise as it is when the wait ends
        (check ``.pending``). Listening from before the start is written, it needs no
        read of the job before waiting: the quickest way from a start to a result."""
        seconds = check_seconds(wait_s, "wait_s")
        request = self.prepare(fn, args, kwargs, id=id, start_at=start_at, tags=tags)
        job_id = request.promise.id
        with self.store.listen([job_id]) as listener:
            # Nobody hears of this start before the wait ends: it is written without a
            # flush, and the commit that settles the job flushes it (one flush for a
            # quick job, not two). A job not settled so is flushed below.
            transition, _ = await self._astart(request, durable=False)
            found = {job_id: transition.promise}
            found = await self.store.wait_listening(listener, found, timeout=seconds)
        job = found[job_id]
        if not _ended_by_a_flushed_commit(job):
            await self.store.db.aflush()
        return transition, job

    async def _astart(
        self, request: StartRequest, *, durable: bool = True
    ) -> tuple[Transition, JobView | None]:
        worker = self._local(request)
        owner, lease = (worker.owner, worker.lease_ms) if worker else (None, 0)
        started_at = self.store.clock()
        first = self._start_first(request, owner, lease)
        try:
            transition, claim = await self.store.db.awrite(
                lambda tx: self.start_tx(tx, request, owner, lease, first),
                durable=durable, one_statement=True, first=first,
            )  # fmt: skip
        except BaseException as exc:
            if worker is not None:
                worker.unreserve()
            if isinstance(exc, JobConflict):
                # It tells of the job there, whose start (by an ``astart_and_wait``
                # still waiting) may not be flushed yet.
                await self.store.db.aflush()
            if isinstance(exc, OutcomeUnknown):
                raise _start_unknown(request, exc) from exc
            raise
        self._started(worker, transition, claim)
        if claim is None or owner is None or not transition.fresh:
            return transition, None
        promise = transition.promise
        task = TaskInfo(
            id=promise.id, kind=claim.kind, state="claimed", ready_at=request.begin,
            waiting_on=None, owner=owner.id, attempts=claim.attempts, step_id=None,
            step_attempt=0, progress=None, updated_at=promise.created_at,
            lease_expires_at=started_at + lease,
        )  # fmt: skip
        return transition, JobView(promise, task, None)

    def timer(
        self, id: str | None, fire_at: int, *, tags: Mapping[str, str] | None = None
    ) -> Transition:
        """A durable timer that resolves at ``fire_at`` (ms). The same id and time again
        returns it while it waits; an id in use otherwise (also a timer that already
        fired or was cancelled) is a ``JobConflict``."""
        timer_id = check_job_id(id, "timer id") if id is not None else f"timer-{new_id()}"
        new = self.store.check_create(
            timer_id, timeout_at=check_timestamp(fire_at, "fire_at"),
            tags={**(tags or {}), TIMER_TAG: "true"}, ikey=f"timer@{fire_at}", strict=True,
        )  # fmt: skip
        try:
            return self.store.db.write(lambda tx: self.store.create_tx(tx, new))
        except PromiseAlreadyExists as exc:
            state = {"resolved": "already fired", "rejected_canceled": "cancelled"}.get(
                exc.state, f"in use ({exc.state})"
            )
            raise JobConflict(
                f"the id {timer_id!r} is {state}: an id names one timer or job for as long as "
                "it is kept. Choose a new id for a new timer"
            ) from exc

    def cancel(self, job_id: str) -> Transition:
        """Cancel a job: a running one is stopped at once (its coroutine is cancelled,
        here or in another process); a waiting one never wakes. A job's own steps (its
        sleeps, waits and ``ctx.run`` records) are part of it, not things to cancel: that
        would fail the job in a way it never chose (cancel the job instead)."""
        found = self.store.get(job_id)
        step = found.param.headers.get(STEP_TAG)
        if step is not None and "." in job_id:
            job = job_id.rsplit(".", 1)[0]
            raise InvalidArgument(
                f"{job_id!r} is a step of the job {job!r} (its {step!r}), not a job of its "
                f"own; cancel the job {job!r} to stop it"
            )
        return self.store.cancel(
            job_id, value=Value(ErrorInfo("Cancelled", "the job was cancelled").to_json())
        )

    @staticmethod
    def result(job: Promise, annotation: Any = inspect.Parameter.empty) -> Any:
        """The value of a settled job, or its failure raised as ``StoredError``."""
        if job.pending:
            raise InvalidArgument(f"job {job.id!r} is still pending")
        if job.state == "resolved":
            return from_json(job.value.data, annotation)
        if job.state == "rejected_timedout":
            raise StoredError(ErrorInfo("TimeoutError", f"job {job.id!r} timed out"))
        raise StoredError(ErrorInfo.from_json(job.value.data))

    # -- reading ------------------------------------------------------------------------

    def view(self, id: str) -> JobView:
        """A job's (or timer's) state in one read; ``PromiseNotFound`` for an unknown id."""
        return view(self, id)

    def views(self, ids: Sequence[str]) -> dict[str, JobView]:
        """``view`` for many ids in one query; unknown ids are left out."""
        return views(self, ids)

    async def aviews(self, ids: Sequence[str]) -> dict[str, JobView]:
        return await aviews(self, ids)

    def workers(self) -> list[WorkerInfo]:
        """The workers that run (or ran) on this store, newest first."""
        return self.presence.workers(max_age_s=0)

    # -- running a claimed task -------------------------------------------------------

    async def execute(
        self,
        claim: Claim,
        job: Promise,
        *,
        to_thread: Callable[[Callable[[], Any]], Awaitable[Any]] = asyncio.to_thread,
        woke_after_ms: int | None = None,
    ) -> None:
        """Run (or replay) the claimed job until it settles, suspends or is stopped."""
        if job.pending and self.store.clock() >= job.timeout_at:
            # Its deadline passed while it waited: store that (its task is done with it).
            stored = await self.store.db.awrite(
                lambda tx: self.store.persist_timeouts_tx(tx, [job.id], self.store.clock())
            )
            job = stored.get(job.id, job)
        kind = job.tags.get(JOB_TAG, "")
        if not job.pending:
            return  # settled while the task waited; the database marked the task done
        try:
            spec = json.loads(job.param.data or "")
            function = lookup(spec["fn"], self.registry)
            args, kwargs = validated_arguments(function, spec["args"], spec["kwargs"])
        except UnknownJob:
            # Claims filter by kind, so only a job whose kind this worker claimed but whose
            # function it lacks gets here: give it back for a worker that has it.
            log.error(
                "job %s is of kind %r, which this worker lacks; handing it back", job.id, kind
            )
            await self.tasks.release(claim)
            return
        except (InvalidArgument, ValueError, KeyError, TypeError) as exc:
            await self._finish(claim, job, kind, "reject", ErrorInfo.of(exc).to_json())
            return
        children = {} if claim.attempts <= 1 else await self._children(job.id)
        runner = asyncio.current_task()
        if runner is None:
            raise InvalidArgument("Runtime.execute must run in an asyncio task")
        closing = asyncio.Event()
        stop = _StopWhenSettled(self.store, job, runner, closing)
        try:
            await self._execute(claim, job, kind, function, args, kwargs, children, to_thread,
                                woke_after_ms, closing)  # fmt: skip
        finally:
            stop.close()

    async def _execute(
        self,
        claim: Claim,
        job: Promise,
        kind: str,
        function: DurableFunction,
        args: Any,
        kwargs: Any,
        children: dict[str, Promise],
        to_thread: Callable[[Callable[[], Any]], Awaitable[Any]],
        woke_after_ms: int | None,
        closing: asyncio.Event,
    ) -> None:
        pause = 0.25
        while True:
            closing.clear()
            run = Run(
                store=self.store, tasks=self.tasks, encode=self.encode, observer=self.observer,
                claim=claim, job=job, kind=kind, children=children, to_thread=to_thread,
                closing=closing,
            )  # fmt: skip
            emit(self.observer.run_started, job.id, kind, claim.attempts, woke_after_ms)
            try:
                await self._run_once(run, function, args, kwargs)
                return
            except Interrupted as exc:
                # The store failed under the job. Keep the claim (every write stays
                # fenced) and replay after a pause: finished steps are skipped.
                emit(self.observer.run_ended, job.id, kind, "interrupted", "StoreUnavailable")
                log.warning(
                    "job %s interrupted by the store (%s); replaying in %.2f s", job.id, exc, pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                children = run.children

    async def _children(self, job_id: str) -> dict[str, Promise]:
        sql = self.store.sql
        bounds = {"lo": job_id + ".", "hi": job_id + "/"}
        rows = await self.store.db.aread(lambda tx: tx.all(sql.children, bounds))
        start = len(job_id) + 1
        return {
            p.id: p
            for p in map(promise_from_row, rows)
            if _CHILD_SUFFIX.fullmatch(p.id, start) is not None
        }

    async def _run_once(self, run: Run, function: DurableFunction, args: Any, kwargs: Any) -> None:
        job, kind = run.job, run.kind
        ctx = Context(run, job.id, function.retry)
        outcome: tuple[Literal["resolve", "reject"], str]
        try:
            result = await function.fn(ctx, *args, **kwargs)
            await run.flush(deferred=False)
            outcome = ("resolve", self.encode(result, f"the result of job {job.id!r}"))
        except Suspend as signal:
            await run.flush(deferred=False)
            run.closing.set()
            await self._suspend(run, signal)
            return
        except JobStopped:
            emit(self.observer.run_ended, job.id, kind, "lost", None)
            return
        except asyncio.CancelledError:
            # Stopped (a shutdown, a lost lease, the job settled elsewhere): the steps
            # that finished are still recorded, or a replay would run them again. The
            # writes are fenced: a stale owner's are refused.
            if run.deferred:
                with contextlib.suppress(Exception):
                    await asyncio.shield(run.write(run.take_deferred(), fence=False))
            emit(self.observer.run_ended, job.id, kind, "cancelled", None)
            raise
        except Exception as exc:
            outcome = ("reject", ErrorInfo.of(exc).to_json())
        if run.broken:
            outcome = ("reject", ErrorInfo.of(run.broken[0]).to_json())
        run.closing.set()
        await self._finish(run.claim, job, kind, *outcome, run=run)

    async def _suspend(self, run: Run, signal: Suspend) -> None:
        claim, store = run.claim, self.store

        # Going to sleep with no step to record first is one statement on PostgreSQL
        # (``Tasks.wait_tx``); waiting on a promise locks it first, in a transaction.
        first: First | None = None
        if signal.create is not None and not run.deferred:
            timer = signal.create
            first = functools.cache(
                lambda: self.tasks.sleep_statement(claim, timer, signal.ready_at, signal.waiting_on)
            )
        one_statement = first is not None
        steps = run.take_deferred()

        def unit(tx: Tx) -> None:
            steps(tx)
            self.tasks.wait_tx(tx, claim, signal.ready_at, signal.waiting_on, signal.create, first)

        written, stopped = await _to_the_end(
            store.db.awrite_future(unit, durable=False, one_statement=one_statement, first=first)
        )
        try:
            written.result()
        except LeaseLost:
            emit(self.observer.run_ended, run.job.id, run.kind, "lost", None)
        except PromiseAlreadyExists as exc:
            if stopped is None:
                message = (
                    f"the id {exc.promise_id!r} of a timer of job {run.job.id!r} is taken by "
                    "something else; the job cannot go on (start it again with another id)"
                )
                await self._finish(claim, run.job, run.kind, "reject",
                                   ErrorInfo("InvalidArgument", message).to_json())  # fmt: skip
        except StoreUnavailable as exc:
            if stopped is None:
                raise Interrupted(str(exc)) from exc
        else:
            emit(self.observer.waiting, run.job.id, run.kind, signal.waiting_on, signal.ready_at)
            emit(self.observer.run_ended, run.job.id, run.kind, "suspended", None)
        if stopped is not None:
            raise stopped

    async def _finish(
        self,
        claim: Claim,
        job: Promise,
        kind: str,
        action: Literal["resolve", "reject"],
        data: str,
        *,
        run: Run | None = None,
    ) -> None:
        """Settle the job, with the records of its last steps (``run``'s deferred ones,
        see ``Run.deferred``) in the same transaction. A one-statement unit: on
        PostgreSQL one statement writes it all; not fenced, it writes nothing; for a
        job past its deadline or settled meanwhile it records the steps, and the
        general path settles the job after it."""
        ikey = f"{job.id}:done"
        steps = [] if run is None else run.take_steps()
        value = Value(data)
        first = functools.cache(
            lambda: self.tasks.finish_statement(claim, action, value, ikey, steps, job.timeout_at)
        )

        def unit(tx: Tx) -> Transition:
            if self.store.sql.finish_job:  # PostgreSQL: fence, record, settle in one statement
                transition, recorded = self.tasks.finish_tx(
                    tx, claim, action, value, ikey, steps, job.timeout_at, first
                )
            else:  # one fence holds the task for the whole transaction (the write lock)
                self.tasks.fence_tx(tx, claim)
                recorded = [step.record_tx(tx, self.store, job.timeout_at) for step in steps]
                transition = self.store.settle_tx(tx, job.id, action, value=value, ikey=ikey)
            if run is not None:
                run.children.update((promise.id, promise) for promise in recorded)
            return transition

        written, stopped = await _to_the_end(
            self.store.db.awrite_future(unit, one_statement=True, first=first)
        )
        try:
            written.result()
        except LeaseLost:
            emit(self.observer.run_ended, job.id, kind, "lost", None)  # another worker's now
        except StoreUnavailable as exc:
            if stopped is None:
                raise Interrupted(str(exc)) from exc
        else:
            error = None if action == "resolve" else ErrorInfo.from_json(data).type
            emit(self.observer.run_ended, job.id, kind,
                 "completed" if action == "resolve" else "failed", error)  # fmt: skip
        if stopped is not None:
            raise stopped


def _start_unknown(request: StartRequest, exc: OutcomeUnknown) -> OutcomeUnknown:
    """A start whose outcome is unknown, with the id to start it again by (one the
    runtime made up is known to nobody else)."""
    job_id = request.promise.id
    return OutcomeUnknown(
        f"job {job_id!r} may have been started or not ({exc}); start it again with the id "
        f"{job_id!r} and the same arguments: that gives the job, started once"
    )


async def _to_the_end(
    future: asyncio.Future[T],
) -> tuple[asyncio.Future[T], asyncio.CancelledError | None]:
    """Wait for a run's last write to end, even if the run is stopped meanwhile (a
    worker shutting down, a lost lease): the write commits regardless, so the run still
    hears how it ended and reports it. Returns the finished write and the stop, which
    the caller raises after reporting."""
    stopped = None
    while not future.done():
        try:
            await asyncio.wait([future])  # neither raises the write's error nor cancels it
        except asyncio.CancelledError as exc:
            stopped = exc
    return future, stopped


__all__ = ["JobConflict", "LocalWorker", "Runtime", "StartRequest"]
