"""The MCP server: durable async tools on ``mcp.server.MCPServer``.

Tools every client can use (``agent_tools.tools``): ``start_job`` and one
``start_<kind>`` per job kind, ``probe_status``, ``await_result``, ``schedule``,
``list_jobs``, ``cancel_job``, ``current_time``. Clients that negotiated a task shape
also get tasks, in that shape: the 2025-11-25 core tasks (``tasks_core``) or the
2026-07-28 extension (``tasks_ext``). Each job is also a resource ``job://<id>`` a
client can subscribe to (``resources``). The server advertises what it serves —
tools, those resources, and the task shape of the client's revision — and nothing
else.

Run a worker beside it with ``worker_running`` (the CLI does, unless ``--no-worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any

from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus

from agent_tools import tools
from agent_tools.arguments import ArgumentCheck
from agent_tools.jobs import JobService
from agent_tools.resources import JobResources
from agent_tools.task_handles import TaskHandles
from agent_tools.tasks_core import CoreTasks
from agent_tools.tasks_ext import DurableTasks
from promises import DurableFunction, SqlStore, Worker

log = logging.getLogger("agent_tools.server")

INSTRUCTIONS = """\
Durable background jobs. Work that may take longer than a tool call (about a minute),
that must survive restarts, or that waits for a time or a person: start it with
start_job (or a start_<kind> tool), keep the job_id, and rejoin it later with
probe_status (never blocks) or await_result (waits up to 50 s, then tells you what is
still pending). If you lost your job ids, list_jobs finds them. schedule waits until a
time (a timer you can await) or starts a job later or on a cron schedule; current_time
tells the time to compute one from."""


def version() -> str:
    try:
        return importlib.metadata.version("agent-tools")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def tool_name(kind: str) -> str:
    return tools.tool_name(kind)


@contextlib.asynccontextmanager
async def worker_running(service: JobService, *, concurrency: int = 16) -> AsyncIterator[Worker]:
    """Run a worker for the server's jobs in this event loop while the block runs.
    (One per process: the SDK runs a server lifespan per session.)"""
    worker = Worker(service.runtime, concurrency=concurrency)
    task = asyncio.create_task(worker.run(), name="agent-tools worker")
    # Serve once the worker is registered (a few ms), so the first status read does not
    # report jobs as waiting for a worker; a store that is down only delays it.
    loop = asyncio.get_running_loop()
    ready_by = loop.time() + 10
    while worker.passes == 0 and not task.done() and loop.time() < ready_by:
        await asyncio.sleep(0.01)
    try:
        yield worker
    finally:
        worker.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def advertise_only_what_is_served(
    tools_list_changed: bool = False, own: Collection[str] | None = None
) -> Any:
    """Server middleware: capabilities name tools (whose list changes only behind a
    proxy) and the task shape and the job resources, not the prompts the SDK would
    advertise empty; and the tool schemas carry the rules between arguments
    (``tools.SCHEMA_RULES``) — ours only (``own``, read live; None: every tool), not a
    proxied upstream tool that happens to share a name."""

    async def advertise(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        return await _advertise(ctx, call_next, tools_list_changed, own)

    return advertise


async def _advertise(
    ctx: ServerRequestContext[Any, Any],
    call_next: CallNext,
    tools_list_changed: bool,
    own: Collection[str] | None,
) -> HandlerResult:
    result = await call_next(ctx)
    if ctx.method in ("initialize", "server/discover") and isinstance(result, dict):
        capabilities = result.get("capabilities")
        if isinstance(capabilities, dict):
            for unserved in ("prompts", "completions"):
                capabilities.pop(unserved, None)
            capabilities["tools"] = {"listChanged": tools_list_changed}
            # Jobs as resources, each subscribable (resources/subscribe on 2025-11-25,
            # subscriptions/listen on 2026-07-28); the set of jobs is not announced.
            capabilities["resources"] = {"subscribe": True, "listChanged": False}
    if ctx.method == "tools/list" and isinstance(result, dict):
        for tool in result.get("tools", []):
            rules = tools.SCHEMA_RULES.get(tool.get("name"))
            # (only for our own tools: a proxied upstream tool of that name stays as given)
            ours = own is None or tool.get("name") in own
            if rules and ours and isinstance(tool.get("inputSchema"), dict):
                tool["inputSchema"].update(rules)
    return result


def build_server(
    store: SqlStore,
    kinds: Mapping[str, DurableFunction],
    *,
    await_cap_s: float = 50.0,
    progress_every_s: float = 5.0,
    approval_link: Callable[[str], str] | None = None,
    server_class: type[MCPServer] = MCPServer,
    name: str = "agent-tools",
    instructions: str = INSTRUCTIONS,
    tools_served: Collection[str] | None = None,
    job_tools: Collection[str] | None = None,
    tools_list_changed: bool = False,
    middleware_first: Sequence[Any] = (),
    trace_messages: bool = False,
) -> MCPServer:
    """The server (``tools_served``: only these of our tools; ``job_tools``: the tools
    that start jobs, read live by the task shapes; the rest is for ``agent_tools.proxy``).
    ``trace_messages`` keeps the SDK's OpenTelemetry span per message (``--otel``);
    without it that middleware is dropped, as the SDK allows: it costs a few per cent of
    every request even with no exporter installed."""
    service = JobService(
        store,
        kinds,
        await_cap_s=await_cap_s,
        progress_every_s=progress_every_s,
        approval_link=approval_link,
    )
    handles = TaskHandles(service)
    arguments = ArgumentCheck()
    bus = InMemorySubscriptionBus()
    resources = JobResources(service, bus)
    if job_tools is None:
        job_tools = {"start_job", *(tools.tool_name(name) for name in service.kinds)}
    own_tools: set[str] = set()  # filled once registered below
    server = server_class(
        name,
        title="agent-tools: durable background jobs",
        version=version(),
        instructions=instructions,
        extensions=[DurableTasks(handles, job_tools)],
        # Outermost first: capabilities, then the 2025-11-25 task shape (which strips
        # `task` before the arguments are checked), then the arguments.
        middleware=[
            *middleware_first,
            advertise_only_what_is_served(tools_list_changed, own_tools),
            CoreTasks(handles, job_tools),
            resources,
            arguments,
        ],
        subscriptions=bus,
    )
    if not trace_messages:
        server.middleware[:] = [
            m for m in server.middleware if not isinstance(m, OpenTelemetryMiddleware)
        ]
    resources.register(server)
    for tool, fn in tools.register(server, service, only=tools_served).items():
        arguments.add(tool, fn)
        own_tools.add(tool)
    server.service = service  # type: ignore[attr-defined]  # for the CLI and tests
    return server
