"""Jobs as agents see them: statuses, results, waits, timers and schedules.

This is the layer under the MCP tools (and the CLI and the web pages): it turns
durable promises and their tasks into the statuses an agent reads — ``running``,
``waiting`` (with what it waits for), ``completed``, ``failed``, ``cancelled``,
``timed_out`` (``unknown`` for an id nobody knows) — and validates what an agent asks
for, with errors that say what was wrong and what is allowed, in the agent's words
(never store internals). It knows no SQL.

A status is a dict (the pages and the CLI read these keys; keys may be added, never
renamed): ``job_id, type, kind, status, created_at, updated_at, finished_at,
duration_s, result, error{type,message}, waiting_for{...}, progress{message,fraction,
at}, attempts, deadline`` — and for schedules ``cron, timezone, next_fire_at,
last_job_id``. ``type`` is ``job``, ``timer`` or ``schedule``: the same tools answer
for all three.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pydantic

from agent_tools.errors import JobError, check_job_id, check_job_ids, check_new_id, friendly
from agent_tools.scheduling import KIND_TAG, Scheduling, iso
from agent_tools.statuses import status_of
from promises import (
    JOB_TAG,
    DurableFunction,
    InvalidArgument,
    JobConflict,
    JobView,
    Promise,
    PromiseError,
    Runtime,
    Schedules,
    SqlStore,
    Transition,
    UnknownJob,
)

#: The statuses of something that exists (``list_jobs`` filters on these)...
ListedStatus = Literal["running", "waiting", "completed", "failed", "cancelled", "timed_out"]
#: ... and every status an agent may read: ``unknown`` is an id nobody has.
Status = Literal[ListedStatus, "unknown"]
STATUSES: tuple[str, ...] = get_args(Status)
LISTED_STATUSES: tuple[str, ...] = get_args(ListedStatus)
SETTLED = frozenset({"completed", "failed", "cancelled", "timed_out"})
ItemType = Literal["job", "timer", "schedule"]

MAX_JOB_IDS = 100
MAX_WAIT_S = 45.0
#: Job kinds of calls through ``agent-tools proxy`` start with this; such a job's
#: result is the upstream's ``CallToolResult`` as it gave it.
PROXY_KIND_PREFIX = "proxy:"


def is_proxied(job: Mapping[str, Any]) -> bool:
    """A status (``probe``) of a call made through the proxy."""
    return str(job.get("kind") or "").startswith(PROXY_KIND_PREFIX)


__all__ = ["KIND_TAG", "STATUSES", "JobError", "JobService", "Kind", "Status", "iso"]


#: What the runtime refuses a start with, for reasons the agent can act on.
_REFUSED = (JobConflict, UnknownJob, InvalidArgument)


@dataclass(frozen=True)
class Kind:
    """A job kind as agents see it: a registered durable function, its description
    (the docstring without its ``Args:`` section) and each argument's description."""

    name: str
    description: str
    input_schema: dict[str, Any]
    function: DurableFunction
    arguments: Mapping[str, str]


_SECTION = re.compile(r"^(Args|Arguments|Parameters):\s*$")
_ENTRY = re.compile(r"^(\w+)\s*(\([^)]*\))?:\s*(.*)$")


def split_docstring(text: str) -> tuple[str, dict[str, str]]:
    """A Google-style docstring: the prose, and ``{argument: description}`` from its
    ``Args:`` section (entries ``name: text``, continued on indented lines)."""
    lines = inspect.cleandoc(text).splitlines()
    prose: list[str] = []
    described: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in lines:
        if _SECTION.match(line.strip()) and not line.startswith(" "):
            in_args = True
            continue
        if in_args and line and not line.startswith(" "):
            in_args = False  # the next section or prose
        if not in_args:
            prose.append(line)
            continue
        entry = _ENTRY.match(line.strip())
        indent = len(line) - len(line.lstrip())
        if entry and (current is None or indent <= 4):
            current = entry.group(1)
            described[current] = entry.group(3).strip()
        elif current and line.strip():
            described[current] = f"{described[current]} {line.strip()}".strip()
    return "\n".join(prose).strip(), described


def kind_of(function: DurableFunction) -> Kind:
    text, described = split_docstring(function.description or "")
    fields: dict[str, Any] = {}
    for param in function.signature.parameters.values():
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        info = pydantic.Field(default, description=described.get(param.name))
        fields[param.name] = (annotation, info)
    model = pydantic.create_model(f"{function.name}Arguments", **fields)
    schema = model.model_json_schema()
    return Kind(function.name, text or f"Run the job {function.name}.", schema, function, described)


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
        self.scheduling = Scheduling(self)

    # -- starting ---------------------------------------------------------------------

    def kind(self, kind: object) -> Kind:
        found = self.kinds.get(kind) if isinstance(kind, str) else None
        if found is None:
            available = ", ".join(self.kinds) or "none (load some with --jobs module.path)"
            raise JobError(f"unknown job kind {kind!r}; available kinds: {available}")
        return found

    def _start_checked(self, kind: str, args: Mapping[str, Any] | None,
                       job_id: str | None) -> Kind:  # fmt: skip
        """The kind to start, once the request is checked (``JobError`` in the agent's
        words otherwise)."""
        found = self.kind(kind)
        if args is not None and not isinstance(args, Mapping):
            raise JobError(f"args must be an object of {kind}'s arguments, got {args!r:.60}")
        if job_id is not None:
            check_new_id(job_id)
        return found

    @staticmethod
    def _refused(
        exc: Exception, kind: str, job_id: str | None, current: Mapping[str, Any]
    ) -> JobError:
        """A start the runtime refused, in the agent's words (``current``: the status of
        what holds ``job_id``, for a conflict)."""
        if isinstance(exc, JobConflict):
            held_by = current.get("type", "job")
            if held_by != "job" or current.get("kind") != kind:
                return _id_taken(str(job_id), current)
            return JobError(
                f"job {job_id!r} already exists with other arguments (it is "
                f"{current.get('status')}); call again with the same arguments to get it, or "
                "choose a new job_id"
            )
        return JobError(friendly(exc, what=f"the arguments of {kind}"))

    def _not_a_schedule(self, job_id: str | None) -> None:
        """Jobs, timers and schedules share one set of ids: a job may not take a
        schedule's (the schedule would shadow it in every answer)."""
        if job_id is not None and (found := self.schedules.get(job_id)) is not None:
            raise _id_taken(job_id, {"type": "cron schedule", "status": found.state})

    def start_job(
        self,
        kind: str,
        args: Mapping[str, Any] | None,
        job_id: str | None,
        start_at: int | None = None,
    ) -> dict[str, Any]:
        found = self._start_checked(kind, args, job_id)
        self._not_a_schedule(job_id)
        try:
            transition = self.runtime.start(
                found.function, id=job_id, start_at=start_at, **dict(args or {})
            )
        except _REFUSED as exc:
            conflict = isinstance(exc, JobConflict)
            current = self._probe_one(str(job_id)) if conflict else {}
            raise self._refused(exc, kind, job_id, current) from exc
        status = self.status(transition.promise)
        status["created"] = transition.fresh
        return status

    async def astart_job(
        self,
        kind: str,
        args: Mapping[str, Any] | None,
        job_id: str | None,
        start_at: int | None = None,
    ) -> dict[str, Any]:
        """``start_job`` for the event loop (no thread: the store's writer does the I/O).
        A new job a worker here took at once is known to run: no read back."""
        transition, view = await self._astart(kind, args, job_id, start_at)
        if view is not None:
            status = status_of(view, self.store.clock(), self.approval_link)
        else:
            status = (await self.aprobe([transition.promise.id]))[0]
        status["created"] = transition.fresh
        return status

    async def _astart(
        self, kind: str, args: Mapping[str, Any] | None, job_id: str | None, start_at: int | None
    ) -> tuple[Transition, JobView | None]:
        function = await self._start_function(kind, args, job_id)
        try:
            return await self.runtime.astart_view(
                function, id=job_id, start_at=start_at, **dict(args or {})
            )
        except _REFUSED as exc:
            raise await self._arefused(exc, kind, job_id) from exc

    async def _start_function(
        self, kind: str, args: Mapping[str, Any] | None, job_id: str | None
    ) -> DurableFunction:
        found = self._start_checked(kind, args, job_id)
        if job_id is not None:
            await asyncio.to_thread(self._not_a_schedule, job_id)
        return found.function

    async def _arefused(self, exc: Exception, kind: str, job_id: str | None) -> JobError:
        """A start the runtime refused, as the agent is told it."""
        current = (await self.aprobe([str(job_id)]))[0] if isinstance(exc, JobConflict) else {}
        return self._refused(exc, kind, job_id, current)

    async def start_and_wait(
        self, kind: str, args: Mapping[str, Any] | None, job_id: str | None, wait_s: float
    ) -> dict[str, Any]:
        """Start a job and wait up to ``wait_s`` seconds for it to finish: a quick job's
        answer then carries its result, so the agent needs no second call. Its status is
        read once, when the wait ends (not also after the start)."""
        wait = check_wait_s(wait_s)
        if wait <= 0:
            return await self.astart_job(kind, args, job_id)
        function = await self._start_function(kind, args, job_id)
        try:
            transition, _ = await self.runtime.astart_and_wait(
                function, id=job_id, wait_s=wait, **dict(args or {})
            )
        except _REFUSED as exc:
            raise await self._arefused(exc, kind, job_id) from exc
        status = (await self.aprobe([transition.promise.id]))[0]
        return {**status, "created": transition.fresh}

    # -- reading ----------------------------------------------------------------------

    def status(self, promise: Promise) -> dict[str, Any]:
        """The status of a job or timer whose promise the caller holds (one more read,
        for its task and what it waits on)."""
        return self.statuses([promise.id]).get(promise.id) or unknown(
            promise.id, "NotFound", f"no job, timer or schedule has the id {promise.id!r}"
        )

    def statuses(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Jobs and timers in one read; cron schedules by their id; unknown ids left out."""
        now = self.store.clock()
        views = self.runtime.views(list(dict.fromkeys(ids)))
        out = {i: status_of(v, now, self.approval_link) for i, v in views.items()}
        out.update(self._schedule_statuses([i for i in ids if i not in out]))
        return out

    async def astatuses(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """``statuses`` for the event loop."""
        now = self.store.clock()
        views = await self.runtime.aviews(list(dict.fromkeys(ids)))
        out = {i: status_of(v, now, self.approval_link) for i, v in views.items()}
        missing = [i for i in ids if i not in out]
        if missing:  # not a job or timer: maybe a cron schedule (rarely asked)
            out.update(await asyncio.to_thread(self._schedule_statuses, missing))
        return out

    def _schedule_statuses(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        found = {i: self.scheduling.schedule_status(i) for i in ids}
        return {i: status for i, status in found.items() if status is not None}

    async def aprobe(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """``probe`` for the event loop."""
        check_job_ids(job_ids, MAX_JOB_IDS)
        found = await self.astatuses(job_ids)
        return [
            found.get(i) or unknown(i, "NotFound", f"no job, timer or schedule has the id {i!r}")
            for i in job_ids
        ]

    def probe(self, job_ids: list[str]) -> list[dict[str, Any]]:
        check_job_ids(job_ids, MAX_JOB_IDS)
        found = self.statuses(job_ids)
        return [
            found.get(i) or unknown(i, "NotFound", f"no job, timer or schedule has the id {i!r}")
            for i in job_ids
        ]

    def _probe_one(self, job_id: str) -> dict[str, Any]:
        return self.probe([job_id])[0]

    async def await_results(
        self,
        job_ids: list[str],
        timeout_s: float,
        report: Callable[[float, float, str], Awaitable[None]] | None = None,
        on_approval: Callable[[list[dict[str, Any]], float], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Wait until every job or timer is settled or ``timeout_s`` (capped) passes.

        Every ``progress_every_s`` it calls ``report(elapsed, total, message)`` with the
        jobs' own progress, and ``on_approval(statuses, deadline)`` with jobs newly found
        waiting for a person (to ask in the chat). A person asked is given time to answer
        up to ``deadline`` (``time.monotonic()``: the cap after the call began, whatever
        ``timeout_s``), and no longer: however many forms, the call ends by then.
        Schedules never settle while active: they are reported as pending with their
        next run, not waited for."""
        check_job_ids(job_ids, MAX_JOB_IDS)
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, int | float)
            or not 0 <= timeout_s < float("inf")
        ):
            raise JobError(
                f"timeout_s must be a number of seconds from 0 to {self.await_cap_s:g}, "
                f"got {timeout_s!r}"
            )
        timeout = min(float(timeout_s), self.await_cap_s)
        started = time.monotonic()
        answer_by = started + self.await_cap_s
        first = await self.aprobe(job_ids)
        waitable = [
            s["job_id"]
            for s in first
            if s["status"] in ("running", "waiting") and s.get("type") != "schedule"
        ]
        waitable = list(dict.fromkeys(waitable))
        # One waiter for all: each wake-up reads every id in one query.
        waiting = (
            asyncio.create_task(self.store.wait_all(waitable, timeout=timeout))
            if waitable
            else None
        )
        asked: set[str] = set()

        async def look(statuses: list[dict[str, Any]]) -> None:
            fresh = [s for s in statuses if _approval_of(s) not in (None, *asked)]
            if fresh and on_approval is not None:
                asked.update(str(_approval_of(s)) for s in fresh)
                await on_approval(fresh, answer_by)

        try:
            await look(first)
            while waiting is not None and not waiting.done():
                elapsed = time.monotonic() - started
                if elapsed >= timeout:
                    break
                await asyncio.wait([waiting], timeout=min(self.progress_every_s, timeout - elapsed))
                if waiting.done():
                    break
                statuses = await self.aprobe(waitable)
                still = [s for s in statuses if s["status"] not in SETTLED]
                if not still:
                    break  # all settled (the waiter would have said so soon anyway)
                await look(still)
                if report is not None and still:
                    done = len(waitable) - len(still)
                    message = f"{done} of {len(waitable)} finished; " + _progress_words(still)
                    await report(time.monotonic() - started, timeout, message)
        finally:
            if waiting is not None:
                waiting.cancel()
        statuses = await self.aprobe(job_ids)
        return {
            "done": [s for s in statuses if s["status"] in SETTLED],
            "pending": [s for s in statuses if s["status"] in ("running", "waiting")],
            "unknown": [s for s in statuses if s["status"] == "unknown"],
            "waited_s": round(time.monotonic() - started, 3),
        }

    def list_jobs(
        self,
        status: str | None,
        kind: str | None,
        limit: int,
        cursor: str | None,
        type: str | None = None,
    ) -> dict[str, Any]:
        if status is not None and status not in LISTED_STATUSES:
            raise JobError(f"status must be one of {', '.join(LISTED_STATUSES)}, got {status!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
            raise JobError(f"limit must be an integer from 1 to 200, got {limit!r}")
        if type not in (None, "job", "timer", "schedule"):
            raise JobError(f"type must be job, timer or schedule, got {type!r}")
        # Any well-formed kind, loaded here or not: the store is shared, and jobs of kinds
        # this process never imported are still listed (an unknown one lists none).
        if (
            kind is not None
            and kind not in self.kinds
            and (not isinstance(kind, str) or not kind.strip() or len(kind) > 200)
        ):
            raise JobError(f"kind must be a job kind's name such as 'sleep', got {kind!r:.60}")
        if type == "schedule":
            listed = self.scheduling.list_schedules(limit, cursor)
            listed["jobs"] = [
                j for j in listed["jobs"]
                if (status is None or j["status"] == status) and kind in (None, j["kind"])
            ]  # fmt: skip
            return listed
        if type == "timer" and kind is not None:
            raise JobError("timers have no kind; leave kind out to list timers")
        state = {"running": "pending", "waiting": "pending", "completed": "resolved"}.get(
            status or "", None if status is None else "rejected"
        )
        # Every job, however it was started (a job kind tag); or the timers schedule made.
        tags = {KIND_TAG: "timer"} if type == "timer" else {JOB_TAG: kind or "*"}
        try:
            page = self.store.search(state=state, tags=tags, limit=limit, cursor=cursor)  # type: ignore[arg-type]
        except InvalidArgument as exc:
            raise JobError(
                "cursor is not one this server handed out for these filters; "
                "pass next_cursor from the previous list_jobs answer, with the same filters"
            ) from exc
        found = self.statuses([p.id for p in page.promises])  # one read for the page
        jobs = [found[p.id] for p in page.promises if p.id in found]
        if status is not None:
            jobs = [j for j in jobs if j["status"] == status]
        return {"jobs": jobs, "next_cursor": page.cursor}

    # -- cancelling and scheduling ----------------------------------------------------------

    def cancel(self, job_id: str) -> dict[str, Any]:
        check_job_id(job_id, "job_id")
        if self.scheduling.cancel_schedule(job_id):
            found = self._probe_one(job_id)
            return {**found, "job_id": job_id, "status": "cancelled", "kind": found.get("kind")}
        current = self._probe_one(job_id)
        if current["status"] == "unknown":
            raise JobError(f"no job, timer or schedule has the id {job_id!r}; list_jobs shows them")
        if current["status"] in SETTLED:
            raise JobError(
                f"{current.get('type', 'job')} {job_id!r} is already {current['status']}; "
                "start a new one to run it again"
            )
        try:
            self.runtime.cancel(job_id)
        except InvalidArgument as exc:  # a job's own step: cancel the job instead
            raise JobError(str(exc)) from None
        except PromiseError as exc:  # it finished meanwhile
            now = self._probe_one(job_id)
            raise JobError(f"job {job_id!r} is already {now['status']}") from exc
        return self._probe_one(job_id)

    def schedule(self, **request: Any) -> dict[str, Any]:
        return self.scheduling.schedule(**request)

    def now(self) -> int:
        return self.store.clock()


def _id_taken(item_id: str, current: Mapping[str, Any]) -> JobError:
    what = current.get("type", "job")
    held = f"a {what}" + (f" of kind {current['kind']!r}" if what == "job" else "")
    return JobError(
        f"the id {item_id!r} is already used by {held} ({current.get('status')}); a job, "
        "timer or schedule each has an id of its own: choose a new job_id"
    )


def _approval_of(status: dict[str, Any]) -> str | None:
    waiting = status.get("waiting_for") or {}
    return waiting.get("approval") if status.get("status") == "waiting" else None


def _progress_words(statuses: list[dict[str, Any]]) -> str:
    """The jobs' own words: each pending job's progress, or what it waits for."""
    parts = []
    for status in statuses[:5]:
        progress = status.get("progress") or {}
        waiting = status.get("waiting_for") or {}
        if progress.get("message"):
            parts.append(f"{status['job_id']}: {progress['message']}")
        elif "approval" in waiting:
            parts.append(f"{status['job_id']}: waiting for a person to decide")
        elif "time" in waiting:
            parts.append(f"{status['job_id']}: waiting until {waiting['time']}")
        else:
            parts.append(f"{status['job_id']}: {status['status']}")
    more = f"; and {len(statuses) - 5} more" if len(statuses) > 5 else ""
    return "; ".join(parts) + more


def unknown(job_id: str, error_type: str, message: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": "unknown",
        "error": {"type": error_type, "message": message},
    }


def check_wait_s(wait_s: object) -> float:
    if (
        isinstance(wait_s, bool)
        or not isinstance(wait_s, int | float)
        or not 0 <= wait_s <= MAX_WAIT_S
    ):
        raise JobError(
            f"wait_s must be a number of seconds from 0 to {MAX_WAIT_S:g}, got {wait_s!r}"
        )
    return float(wait_s)
