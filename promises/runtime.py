"""The runtime: starts jobs, and runs (or replays) claimed ones to their end.

Workers (``promises.worker``) claim tasks and call ``Runtime.execute``; the job
function gets a ``promises.context.Context``. See ``promises.functions`` for
``@durable``.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from promises.codec import ErrorInfo, NotSerializable, StoredError, from_json, to_json
from promises.context import Context, Interrupted, JobStopped, Suspend, ms
from promises.errors import InvalidArgument, PromiseAlreadyExists, StoreUnavailable
from promises.functions import REGISTRY, DurableFunction, UnknownJob, lookup, validated_arguments
from promises.records import JOB_TAG, Promise, Transition, Value
from promises.store import SqlStore
from promises.tasks import Claim, LeaseLost, Tasks
from promises.validation import check_id

log = logging.getLogger("promises.runtime")


class JobConflict(InvalidArgument):
    """A job id already in use by a job with other arguments."""


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
        validated_arguments(function, args, kwargs)
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
                conn, job_id, timeout_at=begin + ms(function.timeout, "timeout"),
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
            args, kwargs = validated_arguments(function, spec["args"], spec["kwargs"])
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
