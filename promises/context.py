"""What a job function gets as ``ctx``: checkpointed steps, durable waits, progress.

A job is a promise (``job-42``) whose function is replayed from the top on every run.
Each ``ctx`` call takes the next child id (``job-42.0``, ``job-42.1``, nested
``job-42.1.0``): a child that is already settled returns its stored value without
running again. A step runs at least once; ``current_step().id`` is stable across its
retries and crashes — pass it to side effects as their idempotency key.

A job waiting on a timer or on an outside promise gives its worker slot back
(``Suspend``); it is claimed again, on any process, when what it waits for settles.
Retries apply to steps: a failed step is retried after its policy's delay, also
without holding a slot. When a step fails for good, its error is stored and raised
into the job; an error the job does not handle fails the job.

Determinism: between runs a job must call the same steps in the same order. A step
whose recorded name differs from the one called now fails the job with
``NonDeterministicReplay`` — a stored value is never fed to the wrong step.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from promises.codec import ErrorInfo, NotSerializable, StoredError, from_json
from promises.errors import InvalidArgument, PromiseAlreadyExists, PromiseError, StoreUnavailable
from promises.functions import DurableFunction, return_annotation, step_name
from promises.records import STEP_TAG, TIMER_TAG, Promise, Value
from promises.retry import RetryPolicy
from promises.tasks import Claim, LeaseLost

if TYPE_CHECKING:
    from promises.runtime import Runtime


class Suspend(BaseException):
    """The job waits: give the slot back until ``ready_at`` or ``waiting_on`` settles.
    A BaseException so that ``except Exception`` in job code cannot swallow it."""

    def __init__(self, ready_at: int, waiting_on: str | None) -> None:
        super().__init__(ready_at, waiting_on)
        self.ready_at = ready_at
        self.waiting_on = waiting_on


class JobStopped(BaseException):
    """The job's promise was settled elsewhere (cancelled, timed out) or its lease lost."""


class Interrupted(BaseException):  # a control-flow signal, not an error
    """The store failed under the job (locked too long, connection lost). The run stops
    and the job resumes later; it is never settled by an outage of the store."""


class NonDeterministicReplay(PromiseError):
    """A replay called a different step than the one recorded at that position."""


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
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise InvalidArgument(
            f"{what} must be a non-negative timedelta or seconds, got {duration!r}"
        )
    return int(seconds * 1000)


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
    runtime: Runtime
    claim: Claim
    job: Promise
    id: str
    retry: RetryPolicy
    #: A replay mismatch found anywhere in this run (shared with nested contexts): it
    #: fails the job even if job code caught the exception.
    broken: list[NonDeterministicReplay] = field(default_factory=list)
    _next: int = 0
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def job_id(self) -> str:
        return self.job.id

    def _child_id(self) -> str:
        child = f"{self.id}.{self._next}"
        self._next += 1
        return child

    # Every checkpoint is a fenced write: refused once this worker lost the task.
    def _checkpoint(self, step_id: str, name: str, timeout_at: int, *, timer: bool = False,
                    param: Value | None = None) -> Promise:  # fmt: skip
        store, tasks = self.runtime.store, self.runtime.tasks
        # The step's name goes in the param's headers (no tag row: steps are found by id).
        param = Value(None if param is None else param.data, {STEP_TAG: name})
        tags = {TIMER_TAG: "true"} if timer else None
        try:
            with store.transaction(durable=False) as conn:
                tasks.fence_in(conn, self.claim)
                promise = store.create_in(
                    conn, step_id, timeout_at=timeout_at, tags=tags, ikey=step_id, param=param
                ).promise
        except (LeaseLost, PromiseAlreadyExists) as exc:
            raise JobStopped(str(exc)) from exc
        except StoreUnavailable as exc:
            raise Interrupted(str(exc)) from exc
        recorded = promise.param.headers.get(STEP_TAG)
        if recorded != name:
            self.broken.append(
                NonDeterministicReplay(
                    f"non-deterministic replay of job {self.job_id!r}: step {step_id} was "
                    f"{recorded!r} when it first ran but is {name!r} now. The job's code changed "
                    "between runs; steps must be called in the same order. Start a new job to run "
                    "the new code"
                )
            )
            raise self.broken[-1]
        return promise

    def _settle(self, step_id: str, action: Literal["resolve", "reject"], value: Value) -> Promise:
        store = self.runtime.store
        try:
            with store.transaction(durable=False) as conn:
                self.runtime.tasks.fence_in(conn, self.claim)
                return store.settle_in(conn, step_id, action, value=value, ikey=step_id).promise
        except LeaseLost as exc:
            raise JobStopped(str(exc)) from exc
        except StoreUnavailable as exc:
            raise Interrupted(str(exc)) from exc

    def _replayed(self, promise: Promise, annotation: Any) -> Any:
        if promise.state == "resolved":
            return from_json(promise.value.data, annotation)
        if promise.state == "rejected_timedout":
            raise JobStopped(f"job {self.job_id!r} timed out")
        raise StoredError(ErrorInfo.from_json(promise.value.data))

    # -- steps --------------------------------------------------------------------------

    def run(self, fn: Callable[..., Any], *args: Any, retry: RetryPolicy | None = None,
            **kwargs: Any) -> Awaitable[Any]:  # fmt: skip
        """Run ``fn(*args, **kwargs)`` as a checkpointed step (sync functions run in a
        thread; a ``@durable`` function runs inline with nested step ids) and return its
        result, or its stored result when replaying."""
        return self._run(self._child_id(), fn, args, kwargs, retry or self.retry)

    async def _run(self, step_id: str, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any], retry: RetryPolicy) -> Any:  # fmt: skip
        name, annotation = step_name(fn), return_annotation(fn)
        promise = await asyncio.to_thread(self._checkpoint, step_id, name, self.job.timeout_at)
        if not promise.pending:
            return self._replayed(promise, annotation)
        claim = self.claim
        attempt = (claim.step_attempt if claim.step_id == step_id else 0) + 1
        token = _current_step.set(StepInfo(step_id, attempt))
        try:
            if isinstance(fn, DurableFunction):
                child = Context(self.runtime, claim, self.job, step_id, fn.retry, self.broken)
                result = await fn.fn(child, *args, **kwargs)
            elif inspect.iscoroutinefunction(fn):
                result = await fn(*args, **kwargs)
            else:
                result = await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
            data = self.runtime.encode(result, f"the result of step {step_id} ({name})")
        except Exception as exc:
            # A nested durable function retried its own steps already.
            final = isinstance(exc, NotSerializable) or isinstance(fn, DurableFunction)
            delay = None if final else retry.delay(attempt, exc)
            if delay is not None:
                await asyncio.to_thread(self._note_failure, step_id, attempt)
                raise Suspend(self.runtime.store.clock() + int(delay * 1000), None) from exc
            stored = await asyncio.to_thread(
                self._settle,
                step_id,
                "reject",
                Value(ErrorInfo.of(exc).to_json(), {"attempts": str(attempt)}),
            )
            if stored.state == "resolved":  # a stale owner's success won the race
                return self._replayed(stored, annotation)
            raise
        finally:
            _current_step.reset(token)
        stored = await asyncio.to_thread(
            self._settle, step_id, "resolve", Value(data, {"attempts": str(attempt)})
        )
        return self._replayed(stored, annotation)

    def _note_failure(self, step_id: str, attempt: int) -> None:
        store, tasks = self.runtime.store, self.runtime.tasks
        try:
            with store.transaction(durable=False) as conn:
                tasks.fence_in(conn, self.claim)
                tasks.note_step_failure_in(conn, self.claim, step_id, attempt)
        except LeaseLost as exc:
            raise JobStopped(str(exc)) from exc
        except StoreUnavailable as exc:
            raise Interrupted(str(exc)) from exc

    # -- waiting --------------------------------------------------------------------------

    def sleep(self, duration: timedelta | float) -> Awaitable[None]:
        """Sleep durably: the job gives its slot back and wakes after ``duration``, in
        this process or another, even across crashes."""
        wake_at = self.runtime.store.clock() + ms(duration, "sleep duration")
        return self._sleep(self._child_id(), wake_at)

    def sleep_until(self, when: datetime) -> Awaitable[None]:
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise InvalidArgument(
                f"sleep_until needs an aware datetime, got {when!r}; add a time zone, "
                "e.g. datetime(..., tzinfo=timezone.utc)"
            )
        return self._sleep(self._child_id(), max(int(when.timestamp() * 1000), 0))

    async def _sleep(self, step_id: str, wake_at: int) -> None:
        # A replay creates the same timer again: deduplicated, it keeps the first wake time.
        timer = await asyncio.to_thread(self._checkpoint, step_id, "sleep", wake_at, timer=True)
        if timer.state == "resolved":
            return
        if timer.pending:
            raise Suspend(timer.timeout_at, timer.id)
        self._replayed(timer, None)

    def promise(
        self, *, timeout: timedelta | float, data: Any = None, result_type: Any = None
    ) -> PromiseHandle:
        """Create a promise for someone outside the job to settle (``store.resolve(id,
        value=Value(json))``) and return its handle. ``data`` (JSON) is stored as the
        promise's param, for whoever settles it to read."""
        deadline = self.runtime.store.clock() + ms(timeout, "promise timeout")
        step_id = self._child_id()
        param = Value(self.runtime.encode(data, f"the data of promise {step_id}"))
        self._checkpoint(step_id, "promise", deadline, param=param)
        return PromiseHandle(self, step_id, result_type or inspect.Parameter.empty)

    async def _await_promise(self, promise_id: str, annotation: Any) -> Any:
        try:
            promise = await asyncio.to_thread(self.runtime.store.get, promise_id)
        except StoreUnavailable as exc:
            raise Interrupted(str(exc)) from exc
        if promise.pending:
            raise Suspend(promise.timeout_at, promise_id)
        if promise.state == "rejected_timedout":
            raise StoredError(
                ErrorInfo("TimeoutError", f"promise {promise_id!r} was not settled by its deadline")
            )
        return self._replayed(promise, annotation)

    async def now(self) -> datetime:
        """The current time (the store's clock, UTC), read once and checkpointed as a
        step: a replay sees the same instant, so code that branches on it stays
        deterministic."""
        step_id = self._child_id()
        promise = await asyncio.to_thread(self._checkpoint, step_id, "now", self.job.timeout_at)
        if promise.pending:
            now = self.runtime.store.clock()
            promise = await asyncio.to_thread(self._settle, step_id, "resolve", Value(str(now)))
        return datetime.fromtimestamp(int(self._replayed(promise, int)) / 1000, tz=UTC)

    def progress(self, message: str, fraction: float | None = None) -> None:
        """Report progress (``probe_status`` shows the latest). Written in the background."""
        if not isinstance(message, str) or len(message) > 1000:
            raise InvalidArgument("progress message must be a string of at most 1000 characters")
        if fraction is not None and not (isinstance(fraction, int | float) and 0 <= fraction <= 1):
            raise InvalidArgument(f"progress fraction must be between 0 and 1, got {fraction!r}")
        data = json.dumps(
            {"message": message, "fraction": fraction, "at": self.runtime.store.clock()}
        )
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self.runtime.tasks.set_progress, self.claim, data)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
