"""The MCP tools: what a model reads (names, descriptions, argument and answer
schemas, annotations) and how each call maps onto ``JobService``.

Every parameter says its format and gives an example; bounds the server enforces
are in the schema; answers are typed (``agent_tools.models``). A tool answers with
structured content and the same JSON as text, for clients that read only text.
"""

import asyncio
import contextlib
import functools
import inspect
import json
import re
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    CallToolResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequiredResult,
    TextContent,
    ToolAnnotations,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

from agent_tools import approvals_inband
from agent_tools.errors import JobError, friendly
from agent_tools.jobs import MAX_JOB_IDS, MAX_WAIT_S, JobService, Kind, ListedStatus
from agent_tools.models import (
    AwaitAnswer,
    JobStatus,
    ListAnswer,
    ProbeAnswer,
    ScheduleAnswer,
    TimeAnswer,
)
from agent_tools.scheduling import check_zone, iso
from agent_tools.task_handles import JOB_META
from promises import PromiseError

JobIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=512)]],
    Field(
        min_length=1,
        max_length=MAX_JOB_IDS,
        description=f"Ids of jobs, timers or schedules, 1 to {MAX_JOB_IDS}, as start_job, "
        'schedule or list_jobs gave them. Example: ["report-2026-05"]',
    ),
]
NewJobId = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=200,
        description="Optional id you choose for the job (1–200 characters, not ending in "
        "'.<digits>' or '@<digits>'). Calling again with the same job_id and the same "
        "arguments returns the existing job instead of starting another, so retries are "
        'safe. Example: "report-2026-05". Default: a new random id.',
    ),
]
WaitS = Annotated[
    float,
    Field(
        ge=0,
        le=MAX_WAIT_S,
        description=f"Seconds (0 to {MAX_WAIT_S:g}) to wait for the job to finish before "
        "answering. If it finishes in time, the answer carries its result (status completed "
        "or failed) and no second call is needed; otherwise the answer is the running job. "
        "Example: 10. Default: 0 (answer at once).",
    ),
]


def _when_given(name: str, then: dict[str, Any]) -> dict[str, Any]:
    """A ``dependentSchemas`` entry: ``then`` holds when ``name`` is given and not null
    (the server takes a null argument as left out, so the schema must too)."""
    return {"if": {"properties": {name: {"type": "null"}}}, "else": then}


_NULL: dict[str, Any] = {"type": "null"}  # left out, or given as null
_KIND_GIVEN: dict[str, Any] = {"required": ["kind"], "properties": {"kind": {"type": "string"}}}
_CRON_EXCLUDES: dict[str, Any] = {"at": _NULL, "delay_s": _NULL, "kind": {"type": "string"}}
#: Rules between arguments, added to the generated schemas. No top-level oneOf/anyOf:
#: some clients refuse those in a tool's input schema.
SCHEMA_RULES: dict[str, dict[str, Any]] = {
    "schedule": {
        # at, delay_s and cron exclude one another (one of them is required: the server
        # says so when none is given); cron and args need kind.
        "dependentSchemas": {
            "at": _when_given("at", {"properties": {"delay_s": _NULL, "cron": _NULL}}),
            "delay_s": _when_given("delay_s", {"properties": {"at": _NULL, "cron": _NULL}}),
            "cron": _when_given("cron", {**_KIND_GIVEN, "properties": _CRON_EXCLUDES}),
            "args": _when_given("args", _KIND_GIVEN),
        },
    }
}

START_ANNOTATIONS = ToolAnnotations(
    read_only_hint=False,
    destructive_hint=False,
    # Idempotent only with a job_id: without one, each call starts another job.
    idempotent_hint=False,
    open_world_hint=True,
)


def _text(value: str) -> str:
    """A description as a model reads it: dedented, one paragraph per blank line."""
    return inspect.cleandoc(value)


def _answer(
    model: type[BaseModel], data: dict[str, Any], meta: dict[str, Any] | None = None
) -> CallToolResult:
    """The structured answer, and the same JSON as text, omitting fields a status lacks."""
    body = model.model_validate(data).model_dump(mode="json", exclude_unset=True)
    result = CallToolResult(
        content=[TextContent(type="text", text=json.dumps(body, indent=1))],
        structured_content=body,
    )
    if meta:
        result.meta = meta
    return result


def _started(status: dict[str, Any]) -> CallToolResult:
    """A start tool's answer: the job's status, marked as a started job for the task
    shapes (``task_handles.JOB_META``)."""
    return _answer(JobStatus, status, meta={JOB_META: status["job_id"]})


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking service call off the event loop."""
    return await asyncio.to_thread(fn, *args)


async def _async_call(coro: Awaitable[Any]) -> Any:
    return await coro


def _refusal(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _answers(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A request the agent can fix becomes a tool error in its words (not a crash, and
    without the SDK's "Error executing tool" wrapping)."""

    @functools.wraps(fn)
    async def tool(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except JobError as exc:
            return _refusal(str(exc))
        except PromiseError as exc:
            return _refusal(friendly(exc, what="the request"))

    return tool


def tool_name(kind: str) -> str:
    return "start_" + re.sub(r"[^A-Za-z0-9_]", "_", kind)[:56]


def register(
    server: MCPServer, service: JobService, *, only: Collection[str] | None = None
) -> dict[str, Callable[..., Any]]:
    """Add every tool (or those named in ``only``) to ``server``; returns each tool's
    function by name."""
    added: dict[str, Callable[..., Any]] = {}

    def add(fn: Callable[..., Any], name: str, **options: Any) -> None:
        if only is not None and name not in only:
            return
        tool = _answers(fn)
        server.add_tool(tool, name=name, **options)
        added[name] = tool

    kinds = list(service.kinds)
    kinds_text = "\n".join(f"- {k.name}: {_first_paragraph(k)}" for k in service.kinds.values())
    kind_enum: dict[str, Any] = {"enum": kinds} if kinds else {}
    # Where kind may be null (left out), null is one of the allowed values: an enum beside
    # anyOf[string, null] would refuse the null that the anyOf allows.
    optional_kind_enum: dict[str, Any] = {"enum": [*kinds, None]} if kinds else {}

    async def start_job(
        kind: Annotated[
            str,
            Field(
                description="The job kind to run (the tool description lists them). Example: "
                f"{json.dumps(kinds[0] if kinds else 'sleep')}",
                json_schema_extra=kind_enum,
            ),
        ],
        args: Annotated[
            dict[str, Any] | None,
            Field(
                description="The kind's arguments as an object; each kind's arguments, with "
                'their types, are in its start_<kind> tool. Example: {"seconds": 30} for '
                "sleep. Default: no arguments.",
            ),
        ] = None,
        job_id: NewJobId = None,
        wait_s: WaitS = 0,
    ) -> JobStatus:
        status = await _async_call(service.start_and_wait(kind, args, job_id, wait_s))
        return _started(status)  # type: ignore[return-value]

    add(
        start_job,
        name="start_job",
        title="Start a background job",
        description=_text(
            """
            Start a durable background job and return its job_id at once (status running or
            waiting). Use it for work that may outlast a tool call, must survive restarts, or
            waits for a time or a person. Rejoin it with await_result (waits) or probe_status
            (does not). With job_id, calling again with the same arguments returns the same
            job. With wait_s, a quick job's result comes back in this answer.

            Kinds:
            """
        )
        + "\n"
        + (kinds_text or "- (none loaded)"),
        annotations=START_ANNOTATIONS,
    )

    for kind in service.kinds.values():
        add(
            _kind_tool(service, kind),
            name=tool_name(kind.name),
            title=f"Start {_article(kind.name)} {kind.name} job",
            description=_text(
                f"""
                Start {_article(kind.name)} {kind.name} job in the background (durable: it
                survives restarts) and return its job_id at once; rejoin it with await_result
                or probe_status. With wait_s, a quick job's result comes back in this answer.
                """
            )
            + "\n\n"
            + kind.description,
            annotations=START_ANNOTATIONS,
        )

    async def probe_status(job_ids: JobIds) -> ProbeAnswer:
        return _answer(ProbeAnswer, {"jobs": await _async_call(service.aprobe(job_ids))})  # type: ignore[return-value]

    add(
        probe_status,
        name="probe_status",
        title="Check jobs without waiting",
        description=_text(
            """
            The status of jobs, timers or schedules now, without waiting: running; waiting
            (waiting_for says for what: a time, or a person's decision with its approval id
            and link); completed (with result); failed (with error); cancelled; timed_out; or
            unknown for an id nobody has. Also the job's own progress, attempts and times; for
            a schedule its next run and last run.
            """
        ),
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )

    async def await_result(
        ctx: Context,
        job_ids: JobIds,
        timeout_s: Annotated[
            float,
            Field(
                ge=0,
                le=service.await_cap_s,
                description=f"Seconds to wait at most, 0 to {service.await_cap_s:g} (kept below "
                "client time-outs). Example: 30. Default: 30.",
            ),
        ] = 30,
    ) -> AwaitAnswer | InputRequiredResult:
        return await _await(service, ctx, job_ids, timeout_s)  # type: ignore[return-value]

    add(
        await_result,
        name="await_result",
        title="Wait for jobs to finish",
        description=_text(
            f"""
            Wait until the jobs or timers have all finished, or timeout_s passes (at most
            {service.await_cap_s:g} s), sending progress notifications with the jobs' own
            progress meanwhile. Returns those finished (done, with result or error) and those
            still pending: call again with the pending ids to keep waiting. If a job waits for
            a person's approval and your client can show a form, the person is asked here.
            """
        ),
        # It waits and reads; deciding an approval happens only through the person's form.
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )

    async def schedule(
        at: Annotated[
            str | None,
            Field(
                max_length=64,
                description="When, as an ISO-8601 time with a time zone. Example: "
                '"2026-12-01T09:00:00Z" or "2026-12-01T10:00:00+01:00". Give exactly one '
                "of at, delay_s or cron.",
            ),
        ] = None,
        delay_s: Annotated[
            float | None,
            Field(
                ge=0,
                le=315_360_000,
                description="When, as seconds from now (up to ten years). Example: 3600. Give "
                "exactly one of at, delay_s or cron.",
            ),
        ] = None,
        cron: Annotated[
            str | None,
            Field(
                max_length=200,
                description="Repeat on a cron schedule: exactly five fields, minute hour "
                "day-of-month month day-of-week, in timezone. Needs kind. Example: "
                '"0 9 * * 1-5" (09:00 on weekdays). Give exactly one of at, delay_s or cron.',
            ),
        ] = None,
        kind: Annotated[
            str | None,
            Field(
                description="The job kind to start then (see start_job). Example: "
                f"{json.dumps(kinds[0] if kinds else 'sleep')}. Without kind, schedule makes a "
                "timer that simply completes at that time.",
                json_schema_extra=optional_kind_enum,
            ),
        ] = None,
        args: Annotated[
            dict[str, Any] | None,
            Field(description='The job\'s arguments (only with kind). Example: {"seconds": 5}'),
        ] = None,
        id: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=200,
                description="Optional id you choose for the timer, job or schedule. Ids are "
                'never reused, cancelled ones included. Example: "remind-ana-dentist".',
            ),
        ] = None,
        timezone: Annotated[
            str,
            Field(
                min_length=1,
                max_length=64,
                description="IANA time zone the cron fields are read in. Example: "
                '"Europe/Lisbon". Default: "UTC".',
            ),
        ] = "UTC",
    ) -> ScheduleAnswer:
        request = {"at": at, "delay_s": delay_s, "cron": cron, "kind": kind, "args": args,
                   "schedule_id": id, "timezone": timezone}  # fmt: skip
        return _answer(ScheduleAnswer, await _call(lambda: service.schedule(**request)))  # type: ignore[return-value]

    add(
        schedule,
        name="schedule",
        title="Wait until a time, or start a job later or on a schedule",
        description=_text(
            """
            Give exactly one of at, delay_s or cron.
            - Without kind: a durable timer that completes at that time; await_result on its
              id waits for it (the reminder pattern).
            - With kind (and args): start that job at that time, or at every tick of cron.
            Returns the id (usable with probe_status, await_result, cancel_job), the next fire
            time and the server's time now. To turn "tomorrow at 9" into a time, call
            current_time first.
            """
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False
        ),
    )

    async def list_jobs(
        status: Annotated[
            ListedStatus | None,
            Field(
                description="Only these: running, waiting (includes not yet started), "
                'completed, failed, cancelled or timed_out. Example: "waiting". Default: all.'
            ),
        ] = None,
        kind: Annotated[
            str | None,
            Field(
                description="Only jobs of this kind. Example: "
                f"{json.dumps(kinds[0] if kinds else 'sleep')}. Default: all kinds.",
                json_schema_extra=optional_kind_enum,
            ),
        ] = None,
        type: Annotated[
            Literal["job", "timer", "schedule"] | None,
            Field(
                description="job: jobs, including those schedules started; timer: the timers "
                'schedule made without kind; schedule: cron schedules. Example: "timer". '
                "Default: job."
            ),
        ] = None,
        limit: Annotated[
            int, Field(ge=1, le=200, description="Page size, 1 to 200. Example: 50. Default: 20.")
        ] = 20,
        cursor: Annotated[
            str | None,
            Field(
                max_length=1000,
                description="next_cursor from the previous answer, for the next page (opaque, "
                'e.g. "eyJhZnRlciI6..."). Default: the first page.',
            ),
        ] = None,
    ) -> ListAnswer:
        return _answer(
            ListAnswer, await _call(service.list_jobs, status, kind, limit, cursor, type)
        )  # type: ignore[return-value]

    add(
        list_jobs,
        name="list_jobs",
        title="Find jobs and timers",
        description=_text(
            """
            Jobs newest first (or timers, or cron schedules: see type), optionally by status
            and kind, to find work again after losing its ids. list_jobs(status="waiting")
            shows the jobs that wait for a time or a person; timers and schedules are listed
            with type="timer" and type="schedule". Pass next_cursor back as cursor for the
            next page.
            """
        ),
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )

    async def cancel_job(
        job_id: Annotated[
            str,
            Field(
                min_length=1,
                max_length=512,
                description="The id of the job, timer or "
                'schedule to cancel. Example: "report-2026-05".',
            ),
        ],
    ) -> JobStatus:
        return _answer(JobStatus, await _call(service.cancel, job_id))  # type: ignore[return-value]

    add(
        cancel_job,
        name="cancel_job",
        title="Cancel a job, timer or schedule",
        description=_text(
            """
            Cancel a job, timer or cron schedule for good. A running job stops at its next
            step; a waiting one never wakes; a schedule starts no more jobs. Cannot be undone:
            start a new one to run it again.
            """
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=False
        ),
    )

    async def current_time(
        timezone: Annotated[
            str,
            Field(
                min_length=1,
                max_length=64,
                description="IANA time zone for local. Example: "
                '"America/New_York". Default: "UTC".',
            ),
        ] = "UTC",
    ) -> TimeAnswer:
        return _answer(TimeAnswer, await _call(_now, service, timezone))  # type: ignore[return-value]

    add(
        current_time,
        name="current_time",
        title="The current time",
        description=_text(
            """
            The server's current time, in UTC and in a time zone you name, with the weekday.
            Use it to turn "tomorrow at 9" or "in two hours" into the time schedule needs.
            """
        ),
        annotations=ToolAnnotations(
            read_only_hint=True, idempotent_hint=False, open_world_hint=False
        ),
    )
    return added


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _first_paragraph(kind: Kind) -> str:
    return kind.description.split("\n\n", 1)[0].replace("\n", " ")


def _now(service: JobService, timezone: str) -> dict[str, Any]:
    zone = ZoneInfo(check_zone(timezone))
    ms = service.now()
    local = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(zone)
    return {
        "now": iso(ms),
        "timezone": timezone,
        "local": local.isoformat(timespec="seconds"),
        "weekday": local.strftime("%A"),
        "unix_s": ms / 1000,
    }


def _kind_tool(service: JobService, kind: Kind) -> Any:
    async def start(**arguments: Any) -> JobStatus:
        job_id = arguments.pop("job_id", None)
        wait_s = arguments.pop("wait_s", 0)
        status = await _async_call(service.start_and_wait(kind.name, arguments, job_id, wait_s))
        return _started(status)  # type: ignore[return-value]

    params = []
    for p in kind.function.signature.parameters.values():
        annotation = Any if p.annotation is inspect.Parameter.empty else p.annotation
        text = kind.arguments.get(p.name) or f"The {p.name} argument of the {kind.name} job."
        described = Annotated[annotation, Field(description=text)]  # type: ignore[valid-type]
        params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=described))
    params.append(
        inspect.Parameter(
            "job_id", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=NewJobId
        )
    )
    params.append(
        inspect.Parameter("wait_s", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=WaitS)
    )
    start.__signature__ = inspect.Signature(params, return_annotation=JobStatus)  # type: ignore[attr-defined]
    start.__name__ = tool_name(kind.name)
    return start


# -- await_result, with the person asked in the chat when the client can show a form ----------


class _AskNow(Exception):
    """A 2026-07-28 call found approvals to ask about: answer with input requests."""

    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = statuses


def _form(status: dict[str, Any]) -> tuple[str, str]:
    waiting = status["waiting_for"]
    request = waiting.get("request")
    question = request.get("question") if isinstance(request, dict) else None
    message = str(question or f"Job {status['job_id']} asks for a decision: {json.dumps(request)}")
    return str(waiting["approval"]), message


async def _await(
    service: JobService, ctx: Context, job_ids: list[str], timeout_s: float
) -> CallToolResult | InputRequiredResult:
    modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
    can_ask = approvals_inband.can_elicit(ctx.client_capabilities)
    if modern and ctx.input_responses:
        for key, response in ctx.input_responses.items():
            decision = approvals_inband.decision_from(
                getattr(response, "action", None), getattr(response, "content", None)
            )
            if decision is not None:
                await asyncio.to_thread(approvals_inband.decide, service, key, decision)

    async def report(elapsed: float, total: float, message: str) -> None:
        with contextlib.suppress(Exception):
            await ctx.report_progress(elapsed, total, message)

    async def ask(statuses: list[dict[str, Any]], answer_by: float) -> None:
        if modern:
            if not ctx.input_responses:  # ask once per call; a retry goes on waiting
                raise _AskNow(statuses)
            return
        for status in statuses:
            left = answer_by - time.monotonic()
            if left < 1:  # no time left in this call: the next one asks again
                return
            approval_id, message = _form(status)
            form = ElicitRequest(
                params=ElicitRequestFormParams(
                    message=message, requested_schema=approvals_inband.APPROVAL_FORM
                )
            )
            try:
                # All forms together end by the call's cap: an unanswered form leaves the
                # approval open (the link, the CLI and the next await_result can decide).
                answer = await ctx.session.send_request(
                    form,
                    ElicitResult,
                    request_read_timeout_seconds=left,
                    metadata=ServerMessageMetadata(
                        related_request_id=ctx.request_context.request_id
                    ),
                )
            except Exception:  # the client could not ask: the link and the CLI still can
                continue
            decision = approvals_inband.decision_from(answer.action, answer.content)
            if decision is not None:
                await asyncio.to_thread(approvals_inband.decide, service, approval_id, decision)

    try:
        answer = await service.await_results(
            job_ids, timeout_s, report, on_approval=ask if can_ask else None
        )
    except _AskNow as asking:
        requests = {}
        for status in asking.statuses:
            approval_id, message = _form(status)
            params = ElicitRequestFormParams(
                message=message, requested_schema=approvals_inband.APPROVAL_FORM
            )
            requests[approval_id] = ElicitRequest(params=params)
        return InputRequiredResult(input_requests=requests)  # type: ignore[arg-type]
    return _answer(AwaitAnswer, answer)
