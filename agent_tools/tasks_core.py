"""The 2025-11-25 core tasks (SEP-1686), served from the same durable promises.

A 2025-11-25 client sees ``capabilities.tasks`` (list, cancel, task-augmented
``tools/call``) at ``initialize`` and ``execution.taskSupport: "optional"`` on the
job tools (``start_job``, ``start_<kind>``). A ``tools/call`` to a job tool carrying
``params.task`` answers with a ``CreateTaskResult`` once the job is durably created;
without ``task`` the call answers as a plain tool (every other client's path).

* ``tasks/get``: ``working`` (``statusMessage``: progress, or what the job waits
  for), ``input_required`` while the job waits for a person and the client declared
  elicitation, ``completed``, ``failed`` (a failed or timed-out job: the 2025-11-25
  spec counts ``isError`` results as failed) or ``cancelled``.
* ``tasks/result`` blocks until the task is terminal and returns the
  ``CallToolResult`` the plain tool would show (with the related-task ``_meta``).
  While it blocks on a job waiting for a person, a client that declared elicitation
  is asked in-band (``elicitation/create``, related-task ``_meta``); the answer lands
  on the approval promise, as a link or the CLI would.
* ``tasks/list`` pages the tasks newest first; ``tasks/cancel`` cancels the job
  (``-32602`` once the task is terminal).

The SDK leaves ``tasks/*`` out of its 2025-11-25 surface (it would sieve a
``CreateTaskResult`` as an invalid ``CallToolResult``), so this is a server
middleware: it answers those methods itself before the SDK's validation, and only on
connections that negotiated a handshake-era version. 2026-07-28 requests pass through
to ``tasks_ext``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection, Mapping
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND, ElicitRequest, ElicitResult
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agent_tools import approvals_inband
from agent_tools.jobs import JobError
from agent_tools.task_handles import (
    TASK_REQUESTED,
    TERMINAL,
    TaskHandles,
    TaskNotFound,
    TaskState,
    approval_question,
    job_result,
    started_job,
    status_message,
)
from promises import InvalidArgument

log = logging.getLogger("agent_tools.tasks_core")

RELATED_TASK = "io.modelcontextprotocol/related-task"
IMMEDIATE_RESPONSE = "io.modelcontextprotocol/model-immediate-response"
CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
TASK_METHODS = frozenset({"tasks/get", "tasks/result", "tasks/list", "tasks/cancel"})


def core_task(state: TaskState, poll_interval_ms: int, can_elicit: bool) -> dict[str, Any]:
    """The 2025-11-25 ``Task`` for a task now."""
    job_status = state.job["status"]
    status = "working"
    if job_status == "completed":
        status = "completed"
    elif job_status in ("failed", "timed_out", "unknown"):
        status = "failed"
    elif job_status == "cancelled":
        status = "cancelled"
    elif state.approval is not None and can_elicit:
        status = "input_required"
    task = {
        "taskId": state.task_id,
        "status": status,
        "statusMessage": status_message(state),
        "createdAt": state.created_at,
        "lastUpdatedAt": state.last_updated_at,
        "ttl": state.ttl_ms,
    }
    if status not in TERMINAL:
        task["pollInterval"] = poll_interval_ms
    return task


def _params(ctx: ServerRequestContext[Any, Any]) -> Mapping[str, Any]:
    return ctx.params if isinstance(ctx.params, Mapping) else {}


class CoreTasks:
    """Server middleware for the 2025-11-25 task shape (see the module docstring)."""

    def __init__(
        self,
        handles: TaskHandles,
        job_tools: Collection[str],
        poll_interval_ms: int = 2000,
        recheck_s: float = 5.0,
        ask_timeout_s: float = 300.0,
    ) -> None:
        self.handles = handles
        self.job_tools = job_tools  # read live: a proxy's tools change
        self.poll_interval_ms = poll_interval_ms
        #: How often a blocked ``tasks/result`` looks again for a new approval to ask about.
        self.recheck_s = recheck_s
        #: How long a form may stay unanswered before it is given up (and asked again).
        self.ask_timeout_s = ask_timeout_s
        #: Approvals being asked about now, so a person is asked once at a time.
        self._asking: dict[str, asyncio.Task[None]] = {}

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and ctx.method != "initialize":
            return await call_next(ctx)
        method = ctx.method
        if method == "initialize":
            return self._advertise(await call_next(ctx))
        if method == "tools/list":
            return self._mark_job_tools(await call_next(ctx))
        if method == "tools/call" and "task" in _params(ctx):
            return await self._create(ctx, call_next)
        if method in TASK_METHODS:
            return await self._task_method(ctx)
        return await call_next(ctx)

    # -- what the server advertises ---------------------------------------------------------

    @staticmethod
    def _advertise(result: HandlerResult) -> HandlerResult:
        if (
            isinstance(result, dict)
            and result.get("protocolVersion") not in MODERN_PROTOCOL_VERSIONS
        ):
            capabilities = result.setdefault("capabilities", {})
            capabilities["tasks"] = CAPABILITY
        return result

    def _mark_job_tools(self, result: HandlerResult) -> HandlerResult:
        if isinstance(result, dict):
            for tool in result.get("tools", []):
                if tool.get("name") in self.job_tools:
                    tool["execution"] = {"taskSupport": "optional"}
        return result

    # -- task-augmented tools/call ---------------------------------------------------------

    async def _create(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        params = dict(_params(ctx))
        params.pop("task")
        name = params.get("name")
        if name not in self.job_tools:
            raise MCPError(
                code=METHOD_NOT_FOUND,
                message=f"tool {name!r} does not run as a task; call it without 'task' "
                "(start_job and the start_<kind> tools do)",
            )
        requested = TASK_REQUESTED.set(True)
        try:
            result = await call_next(dataclasses.replace(ctx, params=params))
        finally:
            TASK_REQUESTED.reset(requested)
        job_id = started_job(result)
        if job_id is None:
            return result  # the job was not created: the tool error is the answer
        task_id = await anyio.to_thread.run_sync(self.handles.create, job_id)
        task = await self._task(ctx, task_id)
        return {
            "task": task,
            "_meta": {
                IMMEDIATE_RESPONSE: (
                    f"Started job {job_id} in the background (task {task_id}); "
                    "its result arrives when the task completes."
                )
            },
        }

    # -- tasks/* ---------------------------------------------------------------------------------

    async def _state(self, task_id: str) -> TaskState:
        try:
            return await anyio.to_thread.run_sync(self.handles.state, task_id)
        except TaskNotFound as exc:
            raise MCPError(
                code=INVALID_PARAMS, message="Failed to retrieve task: Task not found"
            ) from exc

    async def _task(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]:
        state = await self._state(task_id)
        return core_task(state, self.poll_interval_ms, self._can_elicit(ctx))

    @staticmethod
    def _can_elicit(ctx: ServerRequestContext[Any, Any]) -> bool:
        return approvals_inband.can_elicit(ctx.session.client_capabilities)

    async def _task_method(self, ctx: ServerRequestContext[Any, Any]) -> HandlerResult:
        params = _params(ctx)
        if ctx.method == "tasks/list":
            return await self._list(ctx, params.get("cursor"))
        task_id = params.get("taskId")
        if not isinstance(task_id, str):
            raise MCPError(code=INVALID_PARAMS, message="taskId is required: the id of a task")
        if ctx.method == "tasks/get":
            state = await self._state(task_id)
            task = core_task(state, self.poll_interval_ms, self._can_elicit(ctx))
            if task["status"] == "input_required" and state.approval:
                # Clients that only poll (ext-tasks does) take the form from any stream.
                self._ask_in_background(ctx, state, state.approval["approval"])
            return task
        if ctx.method == "tasks/cancel":
            return await self._cancel(ctx, task_id)
        return await self._result(ctx, task_id)

    async def _list(self, ctx: ServerRequestContext[Any, Any], cursor: object) -> HandlerResult:
        if cursor is not None and not isinstance(cursor, str):
            raise MCPError(
                code=INVALID_PARAMS, message="cursor must be a nextCursor from tasks/list"
            )
        try:
            states, next_cursor = await anyio.to_thread.run_sync(self.handles.list, cursor)
        except InvalidArgument as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"Invalid cursor: {exc}") from exc
        can_elicit = self._can_elicit(ctx)
        out: dict[str, Any] = {
            "tasks": [core_task(s, self.poll_interval_ms, can_elicit) for s in states]
        }
        if next_cursor is not None:
            out["nextCursor"] = next_cursor
        return out

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> HandlerResult:
        task = await self._task(ctx, task_id)
        if task["status"] in TERMINAL:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"Cannot cancel task: already in terminal status '{task['status']}'",
            )
        state = await self._state(task_id)
        try:
            await anyio.to_thread.run_sync(self.handles.service.cancel, state.job_id)
        except JobError as exc:  # it finished meanwhile
            raise MCPError(code=INVALID_PARAMS, message=f"Cannot cancel task: {exc}") from exc
        return await self._task(ctx, task_id)

    async def _result(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> HandlerResult:
        asked: set[str] = set()
        while True:
            state = await self._state(task_id)
            task = core_task(state, self.poll_interval_ms, self._can_elicit(ctx))
            if task["status"] in TERMINAL:
                return {**job_result(state), "_meta": {RELATED_TASK: {"taskId": task_id}}}
            approval = state.approval
            if (
                task["status"] == "input_required"
                and approval
                and approval["approval"] not in asked
                and approval["approval"] not in self._asking
            ):
                asked.add(approval["approval"])
                await self._ask(ctx, state, approval["approval"], ctx.request_id)
                continue
            await self.handles.service.store.wait(state.job_id, timeout=self.recheck_s)

    def _ask_in_background(
        self, ctx: ServerRequestContext[Any, Any], state: TaskState, approval_id: str
    ) -> None:
        if approval_id in self._asking:
            return
        task = asyncio.create_task(self._ask(ctx, state, approval_id, None))
        self._asking[approval_id] = task
        task.add_done_callback(lambda _: self._asking.pop(approval_id, None))

    async def _ask(
        self,
        ctx: ServerRequestContext[Any, Any],
        state: TaskState,
        approval_id: str,
        related_request_id: Any,
    ) -> None:
        request = ElicitRequest.model_validate(
            {
                "method": "elicitation/create",
                "params": {
                    "mode": "form",
                    "message": approval_question(state),
                    "requestedSchema": approvals_inband.APPROVAL_FORM,
                    "_meta": {RELATED_TASK: {"taskId": state.task_id}},
                },
            }
        )
        try:
            answer = await ctx.session.send_request(
                request,
                ElicitResult,
                # An unanswered form is asked again later; the approval stays open.
                request_read_timeout_seconds=self.ask_timeout_s,
                metadata=ServerMessageMetadata(related_request_id=related_request_id),
            )
        except Exception as exc:  # the client could not ask: the link and the CLI still can
            log.info("elicitation for %s failed: %r", approval_id, exc)
            return
        decision = approvals_inband.decision_from(answer.action, answer.content)
        if decision is not None:
            await anyio.to_thread.run_sync(
                approvals_inband.decide, self.handles.service, approval_id, decision
            )
