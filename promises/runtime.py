"""Durable functions: ordinary async Python whose steps are checkpointed as promises.

    @durable(retry=Exponential(max_attempts=5), timeout=timedelta(hours=1))
    async def gather(ctx: Context, city: str, months: list[str]) -> dict:
        rows = [await ctx.run(fetch_month, city, m) for m in months]  # each step checkpointed
        await ctx.sleep(timedelta(hours=6))                            # durable timer
        ok = await ctx.promise(timeout=timedelta(days=2))              # settled from outside
        return {"rows": rows, "approved": ok}

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
import hashlib
import inspect
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, overload

import pydantic

from promises.codec import ErrorInfo, NotSerializable, StoredError, adapter, from_json, to_json
from promises.errors import InvalidArgument, PromiseAlreadyExists, PromiseError, StoreUnavailable
from promises.records import JOB_TAG, STEP_TAG, TIMER_TAG, Promise, Transition, Value
from promises.retry import Exponential, RetryPolicy
from promises.store import SqlStore
from promises.tasks import Claim, LeaseLost, Tasks
from promises.validation import check_id

log = logging.getLogger("promises.runtime")


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


class UnknownJob(InvalidArgument):
    """No durable function is registered under that name."""


class JobConflict(InvalidArgument):
    """A job id already in use by a job with other arguments."""


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


# -- registration -----------------------------------------------------------------------


@dataclass(frozen=True)
class DurableFunction:
    fn: Callable[..., Awaitable[Any]]
    name: str
    retry: RetryPolicy
    timeout: timedelta
    description: str

    @property
    def signature(self) -> inspect.Signature:
        """The job's arguments as callers pass them (without ``ctx``)."""
        sig = inspect.signature(self.fn, eval_str=True)
        return sig.replace(parameters=list(sig.parameters.values())[1:])

    async def __call__(self, ctx: Context, *args: Any, **kwargs: Any) -> Any:
        return await self.fn(ctx, *args, **kwargs)


REGISTRY: dict[str, DurableFunction] = {}


@overload
def durable(fn: Callable[..., Awaitable[Any]], /) -> DurableFunction: ...


@overload
def durable(
    *, name: str | None = None, retry: RetryPolicy | None = None, timeout: timedelta = ...
) -> Callable[[Callable[..., Awaitable[Any]]], DurableFunction]: ...


def durable(
    fn: Callable[..., Awaitable[Any]] | None = None,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: timedelta = timedelta(hours=1),
) -> DurableFunction | Callable[[Callable[..., Awaitable[Any]]], DurableFunction]:
    """Register an ``async def f(ctx, ...)`` as a durable function under a stable name
    (default: ``module:qualname``). Use bare or with arguments."""

    def register(f: Callable[..., Awaitable[Any]]) -> DurableFunction:
        if not inspect.iscoroutinefunction(f):
            raise InvalidArgument(f"@durable needs an async function, got {f!r}")
        if timeout <= timedelta(0):
            raise InvalidArgument(f"timeout must be positive, got {timeout}")
        wrapped = DurableFunction(
            fn=f,
            name=name or f"{f.__module__}:{f.__qualname__}",
            retry=retry or Exponential(),
            timeout=timeout,
            description=inspect.cleandoc(f.__doc__ or ""),
        )
        existing = REGISTRY.get(wrapped.name)
        same_source = existing is not None and (
            existing.fn.__module__,
            existing.fn.__qualname__,
        ) == (f.__module__, f.__qualname__)
        if existing is not None and not same_source:
            raise InvalidArgument(
                f"durable function name {wrapped.name!r} is already taken by "
                f"{existing.fn.__module__}.{existing.fn.__qualname__}; "
                "pass name=... to choose another"
            )
        REGISTRY[wrapped.name] = wrapped
        return wrapped

    return register(fn) if fn is not None else register


def lookup(name: str, registry: Mapping[str, DurableFunction] | None = None) -> DurableFunction:
    functions = REGISTRY if registry is None else registry
    found = functions.get(name)
    if found is None:
        available = ", ".join(sorted(functions)) or "none are registered"
        raise UnknownJob(f"no durable function is named {name!r}; available: {available}")
    return found


@functools.lru_cache(maxsize=1024)
def _step_name(fn: object) -> str:
    if isinstance(fn, DurableFunction):
        return fn.name
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}:{getattr(fn, '__qualname__', repr(fn))}"


@functools.lru_cache(maxsize=1024)
def _return_annotation(fn: object) -> Any:
    target = fn.fn if isinstance(fn, DurableFunction) else fn
    try:
        return inspect.signature(target, eval_str=True).return_annotation  # type: ignore[arg-type]
    except (TypeError, ValueError, NameError):
        return inspect.Parameter.empty


def _validated_arguments(
    function: DurableFunction, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Bind arguments to the function's signature and validate each against its
    annotation (so a ``list[Location]`` parameter receives ``Location`` models)."""
    signature = function.signature
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise InvalidArgument(f"arguments do not fit {function.name}{signature}: {exc}") from exc
    for name, value in bound.arguments.items():
        annotation = signature.parameters[name].annotation
        if annotation in (inspect.Parameter.empty, Any):
            continue
        try:
            bound.arguments[name] = adapter(annotation).validate_python(value)
        except pydantic.ValidationError as exc:
            raise InvalidArgument(
                f"argument {name!r} of {function.name} is invalid: {exc}"
            ) from exc
        except TypeError:
            continue  # an annotation pydantic cannot validate: pass the value as given
    return list(bound.args), dict(bound.kwargs)


# -- the context a job runs with ---------------------------------------------------------


def _ms(duration: timedelta | float, what: str) -> int:
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
        name, annotation = _step_name(fn), _return_annotation(fn)
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
        wake_at = self.runtime.store.clock() + _ms(duration, "sleep duration")
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
        deadline = self.runtime.store.clock() + _ms(timeout, "promise timeout")
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


# -- the runtime --------------------------------------------------------------------------


class Runtime:
    """Starts jobs and runs claimed ones. Workers (``promises.worker``) drive it."""

    def __init__(
        self, store: SqlStore, registry: Mapping[str, DurableFunction] | None = None
    ) -> None:
        self.store = store
        self.tasks = Tasks(store)
        self.registry = REGISTRY if registry is None else registry

    def encode(self, value: object, what: str) -> str:
        data = to_json(value, what)
        size, limit = len(data.encode()), self.store.limits.max_payload_bytes
        if size > limit:
            raise NotSerializable(
                f"{what} is {size} bytes of JSON; the limit is {limit} bytes. "
                "Store large data elsewhere and return a reference to it"
            )
        return data

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
        with self.store.transaction() as conn:
            return self.start_in(conn, fn, args, kwargs, id=id, start_at=start_at, tags=tags)

    def start_in(
        self,
        conn: Any,
        fn: DurableFunction | str,
        args: tuple[Any, ...] | list[Any],
        kwargs: Mapping[str, Any],
        *,
        id: str | None = None,
        start_at: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Transition:
        function = lookup(fn, self.registry) if isinstance(fn, str) else fn
        _validated_arguments(function, args, kwargs)
        job_id = (
            check_id(id, "job id")
            if id is not None
            else f"{function.name.split(':')[-1]}-{uuid.uuid4().hex}"
        )
        spec = self.encode(
            {"fn": function.name, "args": list(args), "kwargs": dict(kwargs)},
            f"the arguments of job {job_id!r}",
        )
        now = self.store.clock()
        begin = now if start_at is None else max(start_at, now)
        ikey = hashlib.sha256(spec.encode()).hexdigest()[:32]
        try:
            transition = self.store.create_in(
                conn, job_id, timeout_at=begin + _ms(function.timeout, "timeout"),
                param=Value(spec), tags={**(tags or {}), JOB_TAG: function.name}, ikey=ikey,
            )  # fmt: skip
        except PromiseAlreadyExists as exc:
            raise JobConflict(
                f"job {job_id!r} already exists with other arguments or another function "
                f"(it is {exc.state}); start it with the same arguments to get it, or use a new id"
            ) from exc
        if transition.fresh:
            self.tasks.add_in(conn, job_id, ready_at=begin)
        return transition

    def cancel(self, job_id: str) -> Transition:
        """Cancel a job: it stops at its next step or wait; a waiting job never wakes."""
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

    # -- running a claimed task -------------------------------------------------------------

    async def execute(self, claim: Claim) -> None:
        """Run (or replay) the claimed job until it settles, suspends or is stopped."""
        job = await asyncio.to_thread(self.store.get, claim.id)
        if not job.pending:
            # Settled (or expired, not yet swept) while the task waited: finish the task.
            await asyncio.to_thread(self._finish_settled, claim)
            return
        try:
            spec = json.loads(job.param.data or "")
            function = lookup(spec["fn"], self.registry)
            args, kwargs = _validated_arguments(function, spec["args"], spec["kwargs"])
        except (UnknownJob, InvalidArgument, ValueError, KeyError, TypeError) as exc:
            await asyncio.to_thread(self._finish, claim, "reject", ErrorInfo.of(exc).to_json())
            return
        pause = 0.25
        while True:
            try:
                await self._run_once(claim, job, function, args, kwargs)
                return
            except Interrupted:
                # The store failed under the job. Keep the claim (every write stays
                # fenced) and replay after a pause: finished steps are skipped.
                log.warning("job %s interrupted by the store; replaying in %.2f s", job.id, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _run_once(
        self, claim: Claim, job: Promise, function: DurableFunction, args: Any, kwargs: Any
    ) -> None:
        ctx = Context(self, claim, job, job.id, function.retry)
        try:
            result = await function.fn(ctx, *args, **kwargs)
            outcome: tuple[Literal["resolve", "reject"], str] = (
                "resolve", self.encode(result, f"the result of job {job.id!r}"),
            )  # fmt: skip
        except Suspend as signal:
            try:
                await asyncio.to_thread(
                    self.tasks.suspend, claim, signal.ready_at, signal.waiting_on
                )
            except LeaseLost:
                pass
            except StoreUnavailable as exc:
                raise Interrupted(str(exc)) from exc
            return
        except JobStopped:
            return
        except Exception as exc:
            outcome = ("reject", ErrorInfo.of(exc).to_json())
        if ctx.broken:
            outcome = ("reject", ErrorInfo.of(ctx.broken[0]).to_json())
        await asyncio.to_thread(self._finish, claim, *outcome)

    def _finish_settled(self, claim: Claim) -> None:
        with self.store.transaction(durable=False) as conn:
            self.tasks.fence_in(conn, claim)
            self.tasks.on_settled(conn, [claim.id], self.store.clock())

    def _finish(self, claim: Claim, action: Literal["resolve", "reject"], data: str) -> None:
        try:
            with self.store.transaction() as conn:
                self.tasks.fence_in(conn, claim)
                self.store.settle_in(
                    conn, claim.id, action, value=Value(data), ikey=f"{claim.id}:done"
                )
        except LeaseLost:
            pass  # another worker owns it now; its run decides
        except StoreUnavailable as exc:
            raise Interrupted(str(exc)) from exc
