"""Jobs as agents see them: statuses, results, waits, timers and schedules.

This is the layer under the MCP tools (and the CLI): it turns durable promises and
their tasks into the statuses an agent reads — ``running``, ``waiting`` (with what it
waits for), ``completed``, ``failed``, ``cancelled``, ``timed_out`` — and validates
what an agent asks for, with errors that say what is allowed. It knows no SQL.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from promises import (
    JOB_TAG,
    TIMER_TAG,
    DurableFunction,
    InvalidArgument,
    Promise,
    PromiseError,
    PromiseNotFound,
    Runtime,
    Schedules,
    SqlStore,
    UnknownJob,
)
from promises.codec import ErrorInfo
from promises.tasks import TaskInfo

Status = Literal["running", "waiting", "completed", "failed", "cancelled", "timed_out", "unknown"]

#: Tags agent-tools puts on what it creates, so ``list_jobs`` finds them again.
KIND_TAG = "agent_tools"
MAX_JOB_IDS = 100


class JobError(Exception):
    """A request an agent can fix: the message says what was wrong and what is allowed."""


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    # Always milliseconds, so these strings sort in time order.
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str, what: str = "at") -> int:
    """An ISO-8601 instant with a time zone, in ms since the epoch."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise JobError(
            f"{what}={value!r} is not an ISO-8601 time; use e.g. '2026-12-01T09:00:00Z'"
        ) from exc
    if when.tzinfo is None:
        raise JobError(
            f"{what}={value!r} has no time zone; add 'Z' for UTC or an offset like '+01:00'"
        )
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class Kind:
    """A job kind as agents see it: a registered durable function."""

    name: str
    description: str
    input_schema: dict[str, Any]
    function: DurableFunction


def kind_of(function: DurableFunction) -> Kind:
    import inspect

    import pydantic

    fields: dict[str, Any] = {}
    for param in function.signature.parameters.values():
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    model = pydantic.create_model(f"{function.name}Arguments", **fields)
    schema = model.model_json_schema()
    first_line = (function.description or "").strip().splitlines()
    return Kind(
        function.name, "\n".join(first_line) or f"Run the job {function.name}.", schema, function
    )


class JobService:
    def __init__(
        self,
        store: SqlStore,
        kinds: Mapping[str, DurableFunction],
        *,
        await_cap_s: float = 50.0,
        progress_every_s: float = 5.0,
        approval_link: Callable[[str], str] | None = None,
    ) -> None:
        self.store = store
        #: Makes the web link for an approval id, when the pages are served.
        self.approval_link = approval_link
        self.runtime = Runtime(store, registry=kinds)
        self.schedules = Schedules(self.runtime)
        self.kinds = {name: kind_of(fn) for name, fn in sorted(kinds.items())}
        self.await_cap_s = await_cap_s
        self.progress_every_s = progress_every_s

    # -- starting ---------------------------------------------------------------------

    def _kind(self, kind: str) -> Kind:
        found = self.kinds.get(kind)
        if found is None:
            available = ", ".join(self.kinds) or "none (load some with --jobs module.path)"
            raise JobError(f"unknown job kind {kind!r}; available kinds: {available}")
        return found

    def start_job(
        self,
        kind: str,
        args: Mapping[str, Any] | None,
        job_id: str | None,
        start_at: int | None = None,
    ) -> dict[str, Any]:
        found = self._kind(kind)
        arguments = dict(args or {})
        try:
            transition = self.runtime.start(
                found.function, id=job_id, start_at=start_at, **arguments
            )
        except UnknownJob as exc:
            raise JobError(str(exc)) from exc
        except InvalidArgument as exc:
            raise JobError(f"{exc}. Arguments of {kind}: {json.dumps(found.input_schema)}") from exc
        status = self.status(transition.promise)
        status["created"] = transition.fresh
        return status

    # -- reading ----------------------------------------------------------------------

    def status(self, promise: Promise) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job_id": promise.id,
            "kind": promise.tags.get(JOB_TAG) or ("timer" if promise.timer else None),
            "created_at": iso(promise.created_at),
        }
        if promise.pending:
            out.update(self._pending_status(promise))
            return out
        out["finished_at"] = iso(promise.settled_at)
        out["duration_s"] = round(((promise.settled_at or 0) - promise.created_at) / 1000, 3)
        if promise.state == "resolved":
            out["status"] = "completed"
            out["result"] = json.loads(promise.value.data) if promise.value.data else None
        elif promise.state == "rejected_canceled":
            out["status"] = "cancelled"
        elif promise.state == "rejected_timedout":
            out["status"] = "timed_out"
            out["error"] = {
                "type": "TimeoutError",
                "message": f"the job did not finish by {iso(promise.timeout_at)}",
            }
        else:
            info = ErrorInfo.from_json(promise.value.data)
            out["status"] = "failed"
            out["error"] = {"type": info.type, "message": info.message}
        self._add_task_facts(self.runtime.tasks.get(promise.id), out)
        return out

    def _pending_status(self, promise: Promise) -> dict[str, Any]:
        out: dict[str, Any] = {"deadline": iso(promise.deadline)}
        if promise.timer:
            return {**out, "status": "waiting", "waiting_for": {"time": iso(promise.timeout_at)}}
        task = self.runtime.tasks.get(promise.id)
        now = self.store.clock()
        out["status"] = "running"
        if task is not None and task.state == "ready" and task.waiting_on is not None:
            out["status"] = "waiting"
            out["waiting_for"] = self._waiting_for(task.waiting_on)
        elif task is not None and task.state == "ready" and task.ready_at > now:
            out["status"] = "waiting"
            out["waiting_for"] = {"time": iso(task.ready_at), "reason": "scheduled start or retry"}
        self._add_task_facts(task, out)
        return out

    def _waiting_for(self, promise_id: str) -> dict[str, Any]:
        try:
            waited = self.store.get(promise_id)
        except PromiseNotFound:
            return {"promise": promise_id}
        if waited.timer:
            return {"time": iso(waited.timeout_at)}
        request = json.loads(waited.param.data) if waited.param.data else None
        out = {"approval": promise_id, "deadline": iso(waited.timeout_at), "request": request}
        if self.approval_link is not None:
            out["link"] = self.approval_link(promise_id)
        return out

    @staticmethod
    def _add_task_facts(task: TaskInfo | None, out: dict[str, Any]) -> None:
        if task is None:
            return
        out["attempts"] = task.attempts
        out["updated_at"] = iso(task.updated_at)
        if task.progress:
            out["progress"] = {
                "message": task.progress.message,
                "fraction": task.progress.fraction,
                "at": iso(task.progress.at),
            }

    def probe(self, job_ids: list[str]) -> list[dict[str, Any]]:
        _check_ids(job_ids)
        return [self._probe_one(job_id) for job_id in job_ids]

    def _probe_one(self, job_id: str) -> dict[str, Any]:
        try:
            return self.status(self.store.get(job_id))
        except PromiseNotFound:
            return {
                "job_id": job_id,
                "status": "unknown",
                "error": {"type": "NotFound", "message": f"no job or timer has the id {job_id!r}"},
            }
        except PromiseError as exc:  # a malformed id
            return {
                "job_id": job_id,
                "status": "unknown",
                "error": {"type": "InvalidArgument", "message": str(exc)},
            }

    async def await_results(
        self,
        job_ids: list[str],
        timeout_s: float,
        report: Callable[[float, float, str], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        _check_ids(job_ids)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s < 0:
            raise JobError(f"timeout_s must be a number of seconds >= 0, got {timeout_s!r}")
        timeout = min(float(timeout_s), self.await_cap_s)
        started = time.monotonic()
        known = [i for i in job_ids if self._probe_one(i)["status"] != "unknown"]
        waits = {
            i: asyncio.create_task(self.store.wait(i, timeout=timeout))
            for i in dict.fromkeys(known)
        }
        try:
            while True:
                pending = [t for t in waits.values() if not t.done()]
                elapsed = time.monotonic() - started
                if not pending or elapsed >= timeout:
                    break
                await asyncio.wait(pending, timeout=min(self.progress_every_s, timeout - elapsed))
                if report is not None and any(not t.done() for t in waits.values()):
                    done = sum(t.done() for t in waits.values())
                    await report(
                        time.monotonic() - started,
                        timeout,
                        f"{done} of {len(waits)} settled; still waiting",
                    )
        finally:
            for task in waits.values():
                task.cancel()
        statuses = [self._probe_one(i) for i in job_ids]
        settled = {"completed", "failed", "cancelled", "timed_out"}
        return {
            "done": [s for s in statuses if s["status"] in settled],
            "pending": [s for s in statuses if s["status"] in ("running", "waiting")],
            "unknown": [s for s in statuses if s["status"] == "unknown"],
            "waited_s": round(time.monotonic() - started, 3),
        }

    def list_jobs(
        self, status: str | None, kind: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        statuses = ("running", "waiting", "completed", "failed", "cancelled", "timed_out")
        if status is not None and status not in statuses:
            raise JobError(f"status must be one of {', '.join(statuses)}, got {status!r}")
        if not isinstance(limit, int) or not 1 <= limit <= 200:
            raise JobError(f"limit must be an integer from 1 to 200, got {limit!r}")
        if kind is not None:
            self._kind(kind)
        state = {"running": "pending", "waiting": "pending", "completed": "resolved"}.get(
            status or "", None if status is None else "rejected"
        )
        tags = {JOB_TAG: kind or "*"}  # every job, however it was started
        try:
            page = self.store.search(state=state, tags=tags, limit=limit, cursor=cursor)  # type: ignore[arg-type]
        except InvalidArgument as exc:
            raise JobError(str(exc)) from exc
        jobs = [self.status(p) for p in page.promises]
        if status is not None:
            jobs = [j for j in jobs if j["status"] == status]
        return {"jobs": jobs, "next_cursor": page.cursor}

    # -- cancelling and scheduling ----------------------------------------------------------

    def cancel(self, job_id: str) -> dict[str, Any]:
        schedule = self.schedules.get(job_id)
        if schedule is not None:
            self.schedules.cancel(job_id)
            return {"job_id": job_id, "status": "cancelled", "kind": "schedule"}
        try:
            self.runtime.cancel(job_id)
        except PromiseNotFound as exc:
            raise JobError(
                f"no job, timer or schedule has the id {job_id!r}; list_jobs shows them"
            ) from exc
        except PromiseError as exc:
            current = self._probe_one(job_id)
            raise JobError(
                f"job {job_id!r} is already {current['status']}; start a new job to run it again"
            ) from exc
        return self._probe_one(job_id)

    def schedule(
        self,
        *,
        at: str | None,
        delay_s: float | None,
        cron: str | None,
        kind: str | None,
        args: Mapping[str, Any] | None,
        schedule_id: str | None,
        timezone: str,
    ) -> dict[str, Any]:
        given = [
            name for name, v in (("at", at), ("delay_s", delay_s), ("cron", cron)) if v is not None
        ]
        if len(given) != 1:
            raise JobError(
                "give exactly one of at (ISO-8601 time), delay_s (seconds) or cron (expression)"
            )
        now = self.store.clock()
        if cron is not None:
            if kind is None:
                raise JobError("a cron schedule starts a job: give kind (and args)")
            found = self._kind(kind)
            sid = schedule_id or f"schedule-{uuid.uuid4().hex}"
            try:
                created = self.schedules.add(
                    sid, cron, found.function, timezone=timezone, **dict(args or {})
                )
            except InvalidArgument as exc:
                raise JobError(str(exc)) from exc
            return {
                "id": sid,
                "type": "schedule",
                "cron": cron,
                "timezone": timezone,
                "next_fire_at": iso(created.next_fire_at),
            }
        if at is not None:
            fire_at = parse_time(at)
        else:
            if isinstance(delay_s, bool) or not isinstance(delay_s, int | float) or delay_s < 0:
                raise JobError(f"delay_s must be a number of seconds >= 0, got {delay_s!r}")
            fire_at = now + int(delay_s * 1000)
        if fire_at < now:
            raise JobError(f"at={at!r} is in the past (now is {iso(now)}); give a future time")
        if kind is not None:
            job = self.start_job(kind, args, schedule_id, start_at=fire_at)
            return {
                "id": job["job_id"],
                "type": "job",
                "next_fire_at": iso(fire_at),
                "status": job["status"],
            }
        timer_id = schedule_id or f"timer-{uuid.uuid4().hex}"
        try:
            transition = self.store.create(
                timer_id,
                timeout_at=fire_at,
                tags={TIMER_TAG: "true", KIND_TAG: "timer"},
                ikey=f"timer@{fire_at}",
            )
        except PromiseError as exc:
            raise JobError(f"cannot create timer {timer_id!r}: {exc}") from exc
        return {
            "id": timer_id,
            "type": "timer",
            "next_fire_at": iso(transition.promise.timeout_at),
            "status": "waiting",
        }


def _check_ids(job_ids: object) -> None:
    if not isinstance(job_ids, list) or not job_ids or not all(isinstance(i, str) for i in job_ids):
        raise JobError("job_ids must be a non-empty list of job id strings")
    if len(job_ids) > MAX_JOB_IDS:
        raise JobError(f"at most {MAX_JOB_IDS} job ids per call, got {len(job_ids)}")
