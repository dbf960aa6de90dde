"""The MCP server: durable async tools on ``mcp.server.MCPServer``.

Tools every client can use: ``start_job``, ``probe_status``, ``await_result``,
``schedule``, ``list_jobs``, ``cancel_job``; and one ``start_<kind>`` tool per job kind
with that kind's typed arguments. Run a worker beside it with ``worker_running`` (the
CLI does, unless ``--no-worker``). Errors are tool errors the model can read: they say
which argument is wrong and what is allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from agent_tools.jobs import JobError, JobService, Kind
from agent_tools.task_handles import TaskHandles
from agent_tools.tasks_core import CoreTasks
from agent_tools.tasks_ext import DurableTasks
from promises import DurableFunction, PromiseError, SqlStore, Worker

log = logging.getLogger("agent_tools.server")

INSTRUCTIONS = """\
Durable background jobs. Work that may take longer than a tool call (about a minute),
that must survive restarts, or that waits for a time or a person: start it with
start_job (or a start_<kind> tool), keep the job_id, and rejoin it later with
probe_status (never blocks) or await_result (waits up to 50 s, then tells you what is
still pending). If you lost your job ids, list_jobs finds them. schedule waits until a
time (a timer you can await) or starts a job later or on a cron schedule."""


def _version() -> str:
    try:
        return importlib.metadata.version("agent-tools")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _tool_name(kind: str) -> str:
    return "start_" + re.sub(r"[^A-Za-z0-9_]", "_", kind)[:56]


async def _call(fn: Any, *args: Any) -> Any:
    """Run a blocking service call off the event loop; agent mistakes become tool errors."""
    try:
        return await asyncio.to_thread(fn, *args)
    except JobError as exc:
        raise ToolError(str(exc)) from exc
    except PromiseError as exc:
        raise ToolError(str(exc)) from exc


@contextlib.asynccontextmanager
async def worker_running(service: JobService, *, concurrency: int = 16) -> AsyncIterator[Worker]:
    """Run a worker for the server's jobs in this event loop while the block runs.
    (One per process: the SDK runs a server lifespan per session.)"""
    worker = Worker(service.runtime, concurrency=concurrency)
    task = asyncio.create_task(worker.run(), name="agent-tools worker")
    try:
        yield worker
    finally:
        worker.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def build_server(
    store: SqlStore,
    kinds: Mapping[str, DurableFunction],
    *,
    await_cap_s: float = 50.0,
    progress_every_s: float = 5.0,
    approval_link: Callable[[str], str] | None = None,
) -> MCPServer:
    service = JobService(
        store,
        kinds,
        await_cap_s=await_cap_s,
        progress_every_s=progress_every_s,
        approval_link=approval_link,
    )

    kinds_text = (
        "\n".join(f"- {k.name}: {k.description}" for k in service.kinds.values())
        or "- (none loaded)"
    )
    job_tools = {"start_job", *(_tool_name(name) for name in service.kinds)}
    handles = TaskHandles(service)
    server = MCPServer(
        "agent-tools",
        version=_version(),
        instructions=INSTRUCTIONS,
        extensions=[DurableTasks(handles, job_tools)],
        middleware=[CoreTasks(handles, job_tools)],
    )
    server.service = service  # type: ignore[attr-defined]  # for the CLI and tests

    async def start_job(
        kind: str, args: dict[str, Any] | None = None, job_id: str | None = None
    ) -> dict[str, Any]:
        return dict(await _call(service.start_job, kind, args, job_id))

    start_job.__doc__ = (
        "Start a durable background job and return its job_id at once (status running). "
        "The same job_id with the same args returns the existing job. Kinds:\n" + kinds_text
    )
    server.add_tool(start_job, name="start_job")

    @server.tool()
    async def probe_status(job_ids: list[str]) -> dict[str, Any]:
        """Status of jobs or timers, without waiting: running, waiting (and for what: a time,
        or an approval with its id), completed (with result), failed (with error),
        cancelled or timed_out; plus progress, attempts and timestamps. Unknown ids are
        reported as unknown."""
        return {"jobs": await _call(service.probe, job_ids)}

    @server.tool()
    async def await_result(
        ctx: Context, job_ids: list[str], timeout_s: float = 30
    ) -> dict[str, Any]:
        """Wait until all the jobs or timers are settled or timeout_s passes (capped at
        50 s, below client time-outs), reporting progress while waiting. Returns the
        settled ones (done) and those still pending: call again to keep waiting."""

        async def report(elapsed: float, total: float, message: str) -> None:
            with contextlib.suppress(Exception):
                await ctx.report_progress(elapsed, total, message)

        try:
            return await service.await_results(job_ids, timeout_s, report)
        except JobError as exc:
            raise ToolError(str(exc)) from exc

    @server.tool()
    async def schedule(
        at: str | None = None,
        delay_s: float | None = None,
        cron: str | None = None,
        kind: str | None = None,
        args: dict[str, Any] | None = None,
        id: str | None = None,
        timezone: str = "UTC",
    ) -> dict[str, Any]:
        """Without kind: a durable timer that completes at `at` (ISO-8601 with Z or an
        offset) or after delay_s seconds; await it with await_result (the reminder
        pattern). With kind: start that job at `at` / after delay_s, or on every tick of
        `cron` (five fields, in `timezone`; cancel with cancel_job). Returns the id and
        the next fire time."""
        return dict(
            await _call(
                lambda: service.schedule(
                    at=at,
                    delay_s=delay_s,
                    cron=cron,
                    kind=kind,
                    args=args,
                    schedule_id=id,
                    timezone=timezone,
                )
            )
        )

    @server.tool()
    async def list_jobs(
        status: str | None = None,
        kind: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Jobs newest first, optionally by status and kind, to find work again after
        losing its ids. Pass next_cursor back for the next page."""
        return dict(await _call(service.list_jobs, status, kind, limit, cursor))

    @server.tool()
    async def cancel_job(job_id: str) -> dict[str, Any]:
        """Cancel a job, timer or cron schedule. A running job stops at its next step; a
        waiting one never wakes."""
        return dict(await _call(service.cancel, job_id))

    for kind in service.kinds.values():
        server.add_tool(
            _kind_tool(service, kind),
            name=_tool_name(kind.name),
            description=(
                f"Start a {kind.name} job (durable, in the background) and return its "
                f"job_id at once. {kind.description}"
            ),
        )
    return server


def _kind_tool(service: JobService, kind: Kind) -> Any:
    async def start(**arguments: Any) -> dict[str, Any]:
        job_id = arguments.pop("job_id", None)
        return dict(await _call(service.start_job, kind.name, arguments, job_id))

    params = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in kind.function.signature.parameters.values()
    ]
    params.append(
        inspect.Parameter(
            "job_id", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None
        )
    )
    start.__signature__ = inspect.Signature(params, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    start.__name__ = _tool_name(kind.name)
    return start
