"""The MCP Tasks extension (``io.modelcontextprotocol/tasks``, revision 2026-07-28),
served from the same durable promises as the plain tools.

Only a request that negotiated 2026-07-28 *and* names the extension in its
per-request capabilities gets this shape; a 2025-11-25 client that names the
extension (the Inspector does) keeps the plain tools, because its SDK rejects a
``resultType: "task"`` answer. The 2025-11-25 core tasks live in ``tasks_core``.

* A job tool (``start_job``, ``start_<kind>``) answers with a task handle
  (``resultType: "task"``) once the job is durably created; a bad call keeps its
  tool error. The task id resolves after a restart (``task_handles``).
* ``tasks/get``: ``working`` (``statusMessage``: the job's progress or what it waits
  for), ``input_required`` while the job waits for a person (one
  ``elicitation/create`` input request per approval), ``completed`` with
  the ``CallToolResult`` inlined (a failed or timed-out job completes with
  ``isError``: the spec keeps ``failed`` for JSON-RPC errors), or ``cancelled``.
* ``tasks/update`` answers input requests: the decision lands on the approval
  promise, where the link and the CLI land too. ``tasks/cancel`` cancels the job.
* Clients that did not declare the extension get -32021 from ``tasks/*``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolRequestParams, RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field

from agent_tools import approvals_inband
from agent_tools.jobs import JobError
from agent_tools.task_handles import (
    TaskHandles,
    TaskNotFound,
    TaskState,
    approval_question,
    job_result,
    started_job,
    status_message,
)

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"


class TaskParams(RequestParams):
    model_config = ConfigDict(populate_by_name=True)
    task_id: str = Field(alias="taskId")


class UpdateTaskParams(TaskParams):
    input_responses: dict[str, Any] = Field(alias="inputResponses")


def negotiated(ctx: ServerRequestContext[Any, Any]) -> bool:
    """This request speaks 2026-07-28 and declared the extension."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    return bool(
        capabilities and capabilities.extensions and TASKS_EXTENSION in capabilities.extensions
    )


def not_found() -> MCPError:
    return MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found")


def detailed_task(state: TaskState, poll_interval_ms: int) -> dict[str, Any]:
    """The 2026-07-28 ``DetailedTask`` for a task now. A job waiting for a person is
    ``input_required`` with a form: in this shape input requests travel inside the task
    (``tasks/update`` answers them), which every client of the extension handles."""
    task: dict[str, Any] = {
        "taskId": state.task_id,
        "status": "working",
        "statusMessage": status_message(state),
        "createdAt": state.created_at,
        "lastUpdatedAt": state.last_updated_at,
        "ttlMs": state.ttl_ms,
        "pollIntervalMs": poll_interval_ms,
    }
    job_status = state.job["status"]
    if job_status in ("completed", "failed", "timed_out"):
        task["status"] = "completed"
        task["result"] = {"resultType": "complete", **job_result(state)}
    elif job_status == "cancelled":
        task["status"] = "cancelled"
    elif job_status == "unknown":
        task["status"] = "failed"
        task["error"] = {"code": INVALID_PARAMS, "message": task["statusMessage"]}
    elif state.approval is not None:
        task["status"] = "input_required"
        task["inputRequests"] = {
            state.approval["approval"]: {
                "method": "elicitation/create",
                "params": {
                    "mode": "form",
                    "message": approval_question(state),
                    "requestedSchema": approvals_inband.APPROVAL_FORM,
                },
            }
        }
    return task


class DurableTasks(Extension):
    identifier = TASKS_EXTENSION

    def __init__(
        self, handles: TaskHandles, job_tools: Collection[str], poll_interval_ms: int = 2000
    ) -> None:
        self.handles = handles
        self.job_tools = job_tools  # read live: a proxy's tools change
        self.poll_interval_ms = poll_interval_ms

    def methods(self) -> Sequence[MethodBinding]:
        # Also reached at 2025-11-25, where ``tasks_core`` answers first.
        return (
            MethodBinding("tasks/get", TaskParams, self._get),
            MethodBinding("tasks/update", UpdateTaskParams, self._update),
            MethodBinding("tasks/cancel", TaskParams, self._cancel),
        )

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        result = await call_next(ctx)
        if params.name not in self.job_tools or not negotiated(ctx):
            return result
        job_id = started_job(result)
        if job_id is None:
            return result  # no job in the background: a tool error, or an answer as it is
        data = (
            result.model_dump(by_alias=True, mode="json")
            if isinstance(result, BaseModel)
            else result or {}
        )
        structured = data.get("structuredContent") or {}
        if structured.get("status") in ("completed", "failed", "timed_out", "cancelled"):
            return result  # finished within wait_s: the answer is already here
        task_id = await anyio.to_thread.run_sync(self.handles.create, job_id)
        return {"resultType": "task", **await self._detailed(ctx, task_id)}

    async def _detailed(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]:
        try:
            state = await anyio.to_thread.run_sync(self.handles.state, task_id)
        except TaskNotFound as exc:
            raise not_found() from exc
        return detailed_task(state, self.poll_interval_ms)

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        require_client_extension(ctx, TASKS_EXTENSION)
        return {"resultType": "complete", **await self._detailed(ctx, params.task_id)}

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
    ) -> HandlerResult:
        require_client_extension(ctx, TASKS_EXTENSION)
        task = await self._detailed(ctx, params.task_id)
        outstanding = task.get("inputRequests", {})
        service = self.handles.service
        for key, response in params.input_responses.items():
            if key not in outstanding or not isinstance(response, dict):
                continue  # unknown, already answered or superseded: ignored, as the spec asks
            decision = approvals_inband.decision_from(
                response.get("action"), response.get("content")
            )
            if decision is not None:
                await anyio.to_thread.run_sync(
                    approvals_inband.decide, service, key, decision, "mcp:tasks/update"
                )
        return {"resultType": "complete"}

    async def _cancel(
        self, ctx: ServerRequestContext[Any, Any], params: TaskParams
    ) -> HandlerResult:
        require_client_extension(ctx, TASKS_EXTENSION)
        try:
            state = await anyio.to_thread.run_sync(self.handles.state, params.task_id)
        except TaskNotFound as exc:
            raise not_found() from exc
        # Already finished: cancellation is cooperative and acknowledged all the same.
        with contextlib.suppress(JobError):
            await anyio.to_thread.run_sync(self.handles.service.cancel, state.job_id)
        return {"resultType": "complete"}
