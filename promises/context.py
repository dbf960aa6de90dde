"""What a job function gets as ``ctx``: checkpointed steps, durable waits, progress.

A job is a promise (``job-42``) whose function is replayed from the top on every run.
Each ``ctx`` call takes the next child id (``job-42.0``, ``job-42.1``, nested
``job-42.1.0``). A run starts with the job's recorded children in memory; a child that
is settled returns its stored value without running again. A step's result is written
once, when it returns (one fenced write, with its name, start time and attempts); a
step interrupted by a crash has no record and runs again: steps run at least once, and
``current_step().id`` is stable across retries and crashes — pass it to side effects as
their idempotency key.

A job waiting on a timer or on a promise someone else settles gives its worker slot
back (``Suspend``); it is claimed again, on any process, when what it waits for
settles. Retries apply to steps: a failed step is retried after its policy's delay,
also without holding a slot. When a step fails for good, its error is stored and
raised into the job; an error the job does not handle fails the job.

Determinism: between runs a job must call the same steps in the same order. A step
whose recorded name differs from the one called now fails the job with
``NonDeterministicReplay`` — a stored value is never fed to the wrong step.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from promises.codec import ErrorInfo, StoredError, from_json, to_json
from promises.database import Database, Tx
from promises.errors import (
    InvalidArgument,
    LeaseLost,
    NonDeterministicReplay,
    NotSerializable,
    PromiseAlreadyExists,
    StoreUnavailable,
    WaitPastDeadline,
)
from promises.functions import DurableFunction, return_annotation, step_name
from promises.observe import Observer, emit
from promises.records import APPROVAL_TAG, STEP_TAG, TIMER_TAG, Promise, Value
from promises.retry import RetryPolicy
from promises.store import NewPromise, SqlStore
from promises.tasks import Claim, StepRecord, Tasks

T = TypeVar("T")

#: Step headers: when the step started (ms), and a short form of its arguments.
STARTED_HEADER = "promises:started"
ARGS_HEADER = "promises:args"
ATTEMPTS_HEADER = "attempts"
_ARGS_SHOWN = 160
#: The longest a finished step's record waits for the job's next write to join.
DEFER_S = 0.05


class Suspend(BaseException):
    """The job waits: give the slot back until ``ready_at`` or ``waiting_on`` settles,
    creating ``create`` (a timer) first. A BaseException so that ``except Exception``
    in job code cannot swallow it."""

    def __init__(self, ready_at: int, waiting_on: str | None, create: NewPromise | None = None):
        super().__init__(ready_at, waiting_on)
        self.ready_at = ready_at
        self.waiting_on = waiting_on
        self.create = create


class JobStopped(BaseException):
    """The job's promise was settled elsewhere (cancelled, timed out) or its lease lost."""


class Interrupted(BaseException):  # a control-flow signal, not an error
    """The store failed under the job (locked too long, connection lost). The run stops
    and the job resumes later; it is never settled by an outage of the store."""


@dataclass(frozen=True)
class StepInfo:
    id: str
    attempt: int


_current_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "promises_current_step", default=None
)


def current_step() -> StepInfo | None:
    """The step running now (its stable id and attempt number), inside ``ctx.run``."""
    return _current_step.get()


def ms(duration: timedelta | float, what: str) -> int:
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not seconds >= 0
        or seconds == float("inf")
    ):
        raise InvalidArgument(
            f"{what} must be a non-negative timedelta or number of seconds, got {duration!r}"
        )
    return int(seconds * 1000)


def _args_summary(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = []
    for value in (*args, *kwargs.values()):
        try:
            parts.append(to_json(value, "an argument"))
        except NotSerializable:
            parts.append(type(value).__name__)
    names = [f"{k}=" for k in kwargs]
    shown = ", ".join(
        parts[: len(args)] + [n + p for n, p in zip(names, parts[len(args) :], strict=True)]
    )
    return shown if len(shown) <= _ARGS_SHOWN else shown[: _ARGS_SHOWN - 1] + "…"


@dataclass
class Run:
    """One run of one job: what its contexts share. Built by the runtime."""

    store: SqlStore
    tasks: Tasks
    encode: Callable[[object, str], str]
    observer: Observer
    claim: Claim
    job: Promise
    kind: str
    #: The job's recorded children (steps, timers, promises), by id.
    children: dict[str, Promise]
    #: Runs the sync step functions off the event loop.
    to_thread: Callable[[Callable[[], Any]], Awaitable[Any]]
    #: Set when the run starts to settle or suspend its job: from then on a settle
    #: notification is its own, not a reason to stop it.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    #: A replay mismatch found anywhere in this run: it fails the job even if job code
    #: caught the exception.
    broken: list[NonDeterministicReplay] = field(default_factory=list)
    #: Writes started without waiting (promise creations, progress), awaited before the
    #: job does anything else that depends on them.
    pending_writes: list[asyncio.Future[Any]] = field(default_factory=list)
    #: Finished steps not written yet. A step's record is written before the job does
    #: anything with an effect — the next step, a wait, its end — and together with it
    #: when it is the job's end or a wait: a step then a return costs one transaction.
    #: Only while no other step of the run is in flight, and for ``DEFER_S`` at most.
    deferred: list[StepRecord] = field(default_factory=list)
    #: Steps of this run executing now (``asyncio.gather`` runs several).
    in_flight: int = 0

    @property
    def db(self) -> Database:
        return self.store.db

    async def write(self, unit: Callable[[Tx], T], *, fence: bool = True) -> T:
        """A fenced write for this run: refused once another worker holds the job.
        (``fence=False``: the unit fences itself.)"""
        claim = self.claim

        def fenced(tx: Tx) -> T:
            self.tasks.fence_tx(tx, claim)
            return unit(tx)

        try:
            return await self.db.awrite(fenced if fence else unit, durable=False)
        except LeaseLost as exc:
            raise JobStopped(str(exc)) from exc
        except StoreUnavailable as exc:
            raise Interrupted(str(exc)) from exc

    def write_soon(self, unit: Callable[[Tx], Any]) -> None:
        """Start a fenced write now; ``flush`` waits for it (and raises what it raised).
        If the run stops before any flush, what it raised is dropped with the run."""
        write = asyncio.ensure_future(self.write(unit))
        write.add_done_callback(lambda done: done.cancelled() or done.exception())
        self.pending_writes.append(write)

    async def flush(self, *, deferred: bool = True) -> None:
        """Wait for the writes started without waiting; with ``deferred``, write the
        finished steps too (else the caller writes them with its own unit)."""
        if deferred and self.deferred:
            await self.write(self.take_deferred(), fence=False)
        while self.pending_writes:
            writes, self.pending_writes = self.pending_writes, []
            for write in writes:
                await write

    def record_later(
        self, step_id: str, outcome: Literal["resolve", "reject"], data: str,
        headers: dict[str, str],
    ) -> Awaitable[Promise] | None:  # fmt: skip
        """Record a finished step: deferred (see ``deferred``) when it is the only step
        in flight; else returns the write to await now."""
        step = self.step_record(step_id, outcome, data, headers)
        if self.in_flight:
            return self.write(lambda tx: self.write_step_tx(tx, step), fence=False)
        self.deferred.append(step)
        if len(self.deferred) == 1:
            asyncio.get_running_loop().call_later(DEFER_S, self._write_deferred)
        return None

    def _write_deferred(self) -> None:
        """The job has been busy between steps for a while: write what is deferred."""
        if self.deferred and not self.closing.is_set():
            self.write_soon(self.take_deferred())

    def take_steps(self) -> list[StepRecord]:
        """The deferred step records, for the caller to write (see ``Runtime._finish``)."""
        steps, self.deferred = self.deferred, []
        return steps

    def take_deferred(self) -> Callable[[Tx], None]:
        """One unit writing every deferred step record, in order (each fences itself)."""
        steps = self.take_steps()

        def unit(tx: Tx) -> None:
            for step in steps:
                self.write_step_tx(tx, step)

        return unit

    @staticmethod
    def step_record(
        step_id: str, outcome: Literal["resolve", "reject"], data: str, headers: dict[str, str]
    ) -> StepRecord:
        """A finished step (or a ``now``) as it is written: its name, start and arguments
        go in its param's headers, its attempts in its value's."""
        attempts = {k: v for k, v in headers.items() if k == ATTEMPTS_HEADER}
        param = Value(None, {k: v for k, v in headers.items() if k != ATTEMPTS_HEADER})
        return StepRecord(step_id, outcome, param, Value(data, attempts))

    def record_tx(
        self,
        tx: Tx,
        step_id: str,
        outcome: Literal["resolve", "reject"],
        data: str,
        headers: dict[str, str],
    ) -> Promise:
        """Fence, and write a finished step (or a ``now``) as a settled child; returns it
        as recorded."""
        return self.write_step_tx(tx, self.step_record(step_id, outcome, data, headers))

    def write_step_tx(self, tx: Tx, step: StepRecord) -> Promise:
        timeout_at = self.job.timeout_at
        if self.store.sql.record_step:  # PostgreSQL: fence and write in one statement
            recorded = self.tasks.record_step_tx(tx, self.claim, step, timeout_at)
        else:
            self.tasks.fence_tx(tx, self.claim)
            recorded = step.record_tx(tx, self.store, timeout_at)
        self.children[step.id] = recorded
        return recorded


#: What an approval's handle is read as (see ``promises.approvals.decision_of``).
_DECISION = object()


class PromiseHandle:
    """A promise a job created for someone outside to settle. Hand out ``id``; ``await``
    it for the value it is resolved with (a rejection or its deadline raises)."""

    def __init__(self, ctx: Context, promise_id: str, annotation: Any) -> None:
        self._ctx = ctx
        self.id = promise_id
        self._annotation = annotation

    def __await__(self) -> Any:
        return self._ctx._await_promise(self.id, self._annotation).__await__()

    def __repr__(self) -> str:
        return f"PromiseHandle({self.id!r})"


@dataclass
class Context:
    run_state: Run
    #: This context's id: the job's, or a nested durable function's step id.
    id: str
    retry: RetryPolicy
    _next: int = 0

    @property
    def job_id(self) -> str:
        return self.run_state.job.id

    @property
    def deadline(self) -> datetime | None:
        """The job's deadline, or None when it has none."""
        at = self.run_state.job.deadline
        return None if at is None else datetime.fromtimestamp(at / 1000, tz=UTC)

    @property
    def broken(self) -> list[NonDeterministicReplay]:
        return self.run_state.broken

    def _child_id(self) -> str:
        child = f"{self.id}.{self._next}"
        self._next += 1
        return child

    def _recorded(self, step_id: str, name: str) -> Promise | None:
        """The recorded child at ``step_id``, checked to be the step called now."""
        recorded = self.run_state.children.get(step_id)
        if recorded is None:
            return None
        was = recorded.param.headers.get(STEP_TAG)
        if was != name:
            self.run_state.broken.append(
                NonDeterministicReplay(
                    f"non-deterministic replay of job {self.job_id!r}: step {step_id} was "
                    f"{was!r} when it first ran but is {name!r} now. The job's code changed "
                    "between runs; steps must be called in the same order. Start a new job to run "
                    "the new code"
                )
            )
            raise self.run_state.broken[-1]
        return recorded

    def _replayed(self, promise: Promise, annotation: Any) -> Any:
        if promise.state == "resolved":
            return from_json(promise.value.data, annotation)
        if promise.state == "rejected_timedout":
            raise JobStopped(f"job {self.job_id!r} timed out")
        raise StoredError(ErrorInfo.from_json(promise.value.data))

    def _check_deadline(self, until: int, what: str) -> None:
        deadline = self.run_state.job.deadline
        if deadline is not None and until > deadline:
            raise WaitPastDeadline(
                f"job {self.job_id!r} has a deadline of "
                f"{datetime.fromtimestamp(deadline / 1000, tz=UTC):%Y-%m-%d %H:%M:%S} UTC, "
                f"but asked to {what} until "
                f"{datetime.fromtimestamp(until / 1000, tz=UTC):%Y-%m-%d %H:%M:%S} UTC. "
                "Give the job a longer timeout (or none), or wait less"
            )

    # -- steps --------------------------------------------------------------------------

    def run(self, fn: Callable[..., Any], *args: Any, retry: RetryPolicy | None = None,
            **kwargs: Any) -> Coroutine[Any, Any, Any]:  # fmt: skip
        """Run ``fn(*args, **kwargs)`` as a checkpointed step (sync functions run in a
        thread; a ``@durable`` function runs inline with nested step ids) and return its
        result, or its stored result when replaying."""
        return self._run(self._child_id(), fn, args, kwargs, retry or self.retry)

    async def _run(self, step_id: str, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any], retry: RetryPolicy) -> Any:  # fmt: skip
        run = self.run_state
        name, annotation = step_name(fn), return_annotation(fn)
        await run.flush()
        recorded = self._recorded(step_id, name)
        if recorded is not None and not recorded.pending:
            return self._replayed(recorded, annotation)
        claim = run.claim
        attempt = (claim.step_attempt if claim.step_id == step_id else 0) + 1
        headers = {STEP_TAG: name, ATTEMPTS_HEADER: str(attempt),
                   STARTED_HEADER: str(run.store.clock()),
                   ARGS_HEADER: _args_summary(args, kwargs)}  # fmt: skip
        token = _current_step.set(StepInfo(step_id, attempt))
        emit(run.observer.step_started, run.job.id, step_id, name, attempt)
        run.in_flight += 1
        try:
            if isinstance(fn, DurableFunction):
                child = Context(run, step_id, fn.retry)
                result = await fn.fn(child, *args, **kwargs)
                await run.flush()
            elif inspect.iscoroutinefunction(fn):
                result = await fn(*args, **kwargs)
            else:
                result = await run.to_thread(functools.partial(fn, *args, **kwargs))
            data = run.encode(result, f"the result of step {step_id} ({name})")
        except Exception as exc:
            emit(run.observer.step_ended, run.job.id, step_id, name, attempt, False,
                 type(exc).__qualname__)  # fmt: skip
            # A nested durable function retried its own steps already.
            final = isinstance(exc, NotSerializable) or isinstance(fn, DurableFunction)
            delay = None if final else retry.delay(attempt, exc)
            if delay is not None:
                await run.write(
                    lambda tx: run.tasks.note_step_failure_tx(tx, claim, step_id, attempt)
                )
                raise Suspend(run.store.clock() + int(delay * 1000), None) from exc
            error = ErrorInfo.of(exc).to_json()
            stored = await run.write(
                lambda tx: run.record_tx(tx, step_id, "reject", error, headers), fence=False
            )
            if stored.state == "resolved":  # a stale owner's success won the race
                return self._replayed(stored, annotation)
            raise
        finally:
            run.in_flight -= 1
            _current_step.reset(token)
        emit(run.observer.step_ended, run.job.id, step_id, name, attempt, True, None)
        record = run.record_later(step_id, "resolve", data, headers)
        if record is not None:
            return self._replayed(await record, annotation)
        # Written with the job's next write (see ``Run.deferred``); the job goes on with
        # the value as it will be stored.
        return from_json(data, annotation)

    # -- waiting --------------------------------------------------------------------------

    def sleep(self, duration: timedelta | float) -> Coroutine[Any, Any, None]:
        """Sleep durably: the job gives its slot back and wakes after ``duration``, in
        this process or another, even across crashes."""
        wake_at = self.run_state.store.clock() + ms(duration, "sleep duration")
        return self._sleep(self._child_id(), wake_at)

    def sleep_until(self, when: datetime) -> Coroutine[Any, Any, None]:
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise InvalidArgument(
                f"sleep_until needs an aware datetime, got {when!r}; add a time zone, "
                "e.g. datetime(..., tzinfo=timezone.utc)"
            )
        return self._sleep(self._child_id(), max(int(when.timestamp() * 1000), 0))

    async def _sleep(self, step_id: str, wake_at: int) -> None:
        run = self.run_state
        await run.flush()
        recorded = self._recorded(step_id, "sleep")
        if recorded is not None:
            # A replay: the timer keeps the wake time it was first given.
            if recorded.state == "resolved" or (
                recorded.pending and run.store.clock() >= recorded.timeout_at
            ):
                return
            if recorded.pending:
                raise Suspend(recorded.timeout_at, step_id)
            self._replayed(recorded, None)
            return
        self._check_deadline(wake_at, "sleep")
        timer = run.store.check_create(
            step_id, timeout_at=wake_at, param=Value(None, {STEP_TAG: "sleep"}),
            tags={TIMER_TAG: "true"}, ikey=step_id,
        )  # fmt: skip
        if wake_at <= run.store.clock():  # nothing to wait for: record the timer, go on
            run.children[step_id] = await run.write(
                lambda tx: run.store.create_tx(tx, timer).promise
            )
            return
        raise Suspend(wake_at, step_id, create=timer)

    def promise(
        self, *, timeout: timedelta | float, data: Any = None, result_type: Any = None
    ) -> PromiseHandle:
        """Create a promise for a program outside the job to settle (``store.resolve(id,
        value=Value(json))``) and return its handle. ``data`` (JSON) is stored as the
        promise's param, for whoever settles it to read. For a person, use ``approval``."""
        return self._external("promise", timeout, data, None, result_type)

    def approval(
        self, question: str, *, details: Any = None, timeout: timedelta | float
    ) -> PromiseHandle:
        """Ask a person to decide: creates an approval (see ``promises.approvals``) that
        ``agent-tools approve|reject``, the approval page or an MCP client decides.
        ``await`` the handle for the ``Decision``; past ``timeout`` it raises
        ``StoredError`` (``TimeoutError``)."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidArgument("an approval needs a question: a non-empty string")
        request = {"question": question, "details": details, "job_id": self.job_id}
        return self._external("promise", timeout, request, {APPROVAL_TAG: "true"}, _DECISION)

    def _external(
        self,
        name: str,
        timeout: timedelta | float,
        data: Any,
        tags: dict[str, str] | None,
        result_type: Any,
    ) -> PromiseHandle:
        run = self.run_state
        deadline = run.store.clock() + ms(timeout, "promise timeout")
        step_id = self._child_id()
        annotation = result_type or inspect.Parameter.empty
        recorded = self._recorded(step_id, name)
        if recorded is None:
            self._check_deadline(deadline, "wait for a promise")
            param = Value(run.encode(data, f"the data of promise {step_id}"), {STEP_TAG: name})
            new = run.store.check_create(step_id, timeout_at=deadline, param=param, tags=tags,
                                         ikey=step_id)  # fmt: skip
            run.write_soon(lambda tx: self._create_child(tx, new))
        return PromiseHandle(self, step_id, annotation)

    def _create_child(self, tx: Tx, new: NewPromise) -> Promise:
        try:
            created = self.run_state.store.create_tx(tx, new).promise
        except PromiseAlreadyExists as exc:
            raise InvalidArgument(
                f"the id {new.id!r} of a promise of job {self.job_id!r} is taken by something "
                "else; the job cannot go on (start it again with another id)"
            ) from exc
        self.run_state.children[new.id] = created
        return created

    async def _await_promise(self, promise_id: str, annotation: Any) -> Any:
        """The promise's value (``annotation``: what to read it as), or suspend."""
        run = self.run_state
        await run.flush()
        try:
            promise = await run.store.aget(promise_id)
        except StoreUnavailable as exc:
            raise Interrupted(str(exc)) from exc
        if promise.pending:
            raise Suspend(promise.timeout_at, promise_id)
        if promise.state == "rejected_timedout":
            raise StoredError(
                ErrorInfo("TimeoutError", f"promise {promise_id!r} was not settled by its deadline")
            )
        if annotation is _DECISION and promise.state == "resolved":
            from promises.approvals import decision_of

            return decision_of(promise)
        return self._replayed(promise, annotation)

    async def now(self) -> datetime:
        """The current time (the store's clock, UTC), read once and checkpointed as a
        step: a replay sees the same instant, so code that branches on it stays
        deterministic."""
        run = self.run_state
        step_id = self._child_id()
        await run.flush()
        recorded = self._recorded(step_id, "now")
        if recorded is None:
            now = str(run.store.clock())
            recorded = await run.write(
                lambda tx: run.record_tx(tx, step_id, "resolve", now, {STEP_TAG: "now"}),
                fence=False,
            )
        return datetime.fromtimestamp(int(self._replayed(recorded, int)) / 1000, tz=UTC)

    def progress(self, message: str, fraction: float | None = None) -> None:
        """Report progress (``probe_status`` shows the latest). Written in the background."""
        if not isinstance(message, str) or len(message) > 1000:
            raise InvalidArgument("progress message must be a string of at most 1000 characters")
        if fraction is not None and not (isinstance(fraction, int | float) and 0 <= fraction <= 1):
            raise InvalidArgument(f"progress fraction must be between 0 and 1, got {fraction!r}")
        run = self.run_state
        claim = run.claim
        run.write_soon(lambda tx: run.tasks.set_progress_tx(tx, claim, message, fraction))


__all__ = [
    "Context",
    "Interrupted",
    "JobStopped",
    "PromiseHandle",
    "Run",
    "StepInfo",
    "Suspend",
    "current_step",
]
