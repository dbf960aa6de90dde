"""The MCP Tasks extension (``io.modelcontextprotocol/tasks``, revision 2026-07-28),
served from the same durable promises as the plain tools.

* A client that declared the extension on its request and calls a job tool
  (``start_job`` or ``start_<kind>``) gets a task handle (``resultType: "task"``)
  instead of the job status — only after the job is durably created. The task id is
  an unguessable token, mapped durably to the job, so ``tasks/get`` answers after a
  restart too.
* ``tasks/get``: ``working`` (``statusMessage`` carries progress or what the job
  waits for), ``input_required`` while the job waits for a person (an
  ``elicitation/create`` input request per approval), ``completed`` with the
  ``CallToolResult`` inlined (a failed, timed-out job completes with ``isError``: the
  spec keeps ``failed`` for JSON-RPC errors), or ``cancelled``.
* ``tasks/update`` answers input requests (accept resolves the approval with the
  form's content); ``tasks/cancel`` cancels the job.
* Clients without the extension keep the plain tools; ``tasks/*`` from them is
  refused with -32021.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
from collections.abc import Collection, Sequence
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolRequestParams, RequestParams
from pydantic import BaseModel, ConfigDict, Field

from agent_tools.jobs import KIND_TAG, JobError, JobService, iso
from promises import Promise, PromiseError, PromiseNotFound, Value

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
_PREFIX = "mcp-task."
_APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "comment": {"type": "string"}},
    "required": ["approved"],
}


class TaskParams(RequestParams):
    model_config = ConfigDict(populate_by_name=True)
    task_id: str = Field(alias="taskId")


class UpdateTaskParams(TaskParams):
    input_responses: dict[str, Any] = Field(alias="inputResponses")


def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    return bool(
        capabilities and capabilities.extensions and TASKS_EXTENSION in capabilities.extensions
    )


def _job_id(mapping: Promise) -> str:
    return str(json.loads(mapping.value.data or "{}")["job_id"])


def _detail(job_id: str, status: dict[str, Any]) -> dict[str, Any]:
    """The status-specific part of a task, from the job's status."""
    job_status = status["status"]
    if job_status in ("completed", "failed", "timed_out"):
        # A job's own failure is a tool-level error: the task completes with isError.
        payload: dict[str, Any] = {"job_id": job_id}
        payload.update({k: status[k] for k in ("status", "result", "error") if k in status})
        result = {
            "content": [{"type": "text", "text": json.dumps(payload)}],
            "structuredContent": payload,
            "isError": job_status != "completed",
        }
        return {
            "status": "completed",
            "statusMessage": f"job {job_id} {job_status}",
            "result": result,
        }
    if job_status == "cancelled":
        return {"status": "cancelled", "statusMessage": f"job {job_id} was cancelled"}
    if job_status == "unknown":
        error = {"code": INVALID_PARAMS, "message": f"job {job_id} no longer exists"}
        return {
            "status": "failed",
            "statusMessage": "the job is gone (past retention)",
            "error": error,
        }
    waiting = status.get("waiting_for") or {}
    if "approval" in waiting:
        request = waiting.get("request")
        question = request.get("question") if isinstance(request, dict) else None
        elicitation = {
            "method": "elicitation/create",
            "params": {
                "mode": "form",
                "message": question or f"job {job_id} asks for a decision: {json.dumps(request)}",
                "requestedSchema": _APPROVAL_SCHEMA,
            },
        }
        return {
            "status": "input_required",
            "statusMessage": f"waiting for a decision until {waiting['deadline']}",
            "inputRequests": {waiting["approval"]: elicitation},
        }
    progress = status.get("progress") or {}
    message = progress.get("message") or (
        f"waiting until {waiting['time']}" if waiting else "working"
    )
    return {"status": "working", "statusMessage": message}


class DurableTasks(Extension):
    identifier = TASKS_EXTENSION

    def __init__(
        self, service: JobService, job_tools: Collection[str], poll_interval_ms: int = 2000
    ) -> None:
        self.service = service
        self.job_tools = frozenset(job_tools)
        self.poll_interval_ms = poll_interval_ms

    def methods(self) -> Sequence[MethodBinding]:
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
        if params.name not in self.job_tools or not _declared(ctx):
            return result
        data = (
            result.model_dump(by_alias=True, mode="json")
            if isinstance(result, BaseModel)
            else result or {}
        )
        structured = data.get("structuredContent")
        if data.get("isError") or not isinstance(structured, dict) or "job_id" not in structured:
            return result  # the job was not created: the tool error is the answer
        task_id = await asyncio.to_thread(self._new_task, structured["job_id"])
        return {"resultType": "task", **await asyncio.to_thread(self._task, task_id)}

    # -- the durable mapping task id -> job id ------------------------------------------------

    @staticmethod
    def _mapping_id(task_id: str) -> str:
        # Task ids are bearer handles: the store keeps only their hash.
        return _PREFIX + hashlib.sha256(task_id.encode()).hexdigest()[:40]

    def _new_task(self, job_id: str) -> str:
        store = self.service.store
        task_id = secrets.token_urlsafe(24)
        mapping = self._mapping_id(task_id)
        store.create(mapping, timeout_at=store.clock() + 60_000, tags={KIND_TAG: "mcp-task"})
        store.resolve(mapping, value=Value(json.dumps({"job_id": job_id})))
        return task_id

    def _mapping(self, task_id: str) -> Promise:
        try:
            return self.service.store.get(self._mapping_id(task_id))
        except (PromiseNotFound, PromiseError) as exc:
            raise MCPError(
                code=INVALID_PARAMS, message="Failed to retrieve task: Task not found"
            ) from exc

    def _job_of(self, task_id: str) -> str:
        return _job_id(self._mapping(task_id))

    # -- the task as the client sees it ------------------------------------------------------

    def _task(self, task_id: str) -> dict[str, Any]:
        mapping = self._mapping(task_id)
        job_id = _job_id(mapping)
        status = self.service.probe([job_id])[0]
        retention = int(self.service.store.retention.total_seconds() * 1000)
        progress = status.get("progress") or {}
        task: dict[str, Any] = {
            "taskId": task_id,
            "createdAt": iso(mapping.created_at),
            "lastUpdatedAt": max(
                filter(
                    None, [iso(mapping.created_at), status.get("finished_at"), progress.get("at")]
                )
            ),
            "ttlMs": max(retention, 0),
            "pollIntervalMs": self.poll_interval_ms,
        }
        task.update(_detail(job_id, status))
        return task

    # -- methods ---------------------------------------------------------------------------

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        require_client_extension(ctx, TASKS_EXTENSION)
        return {"resultType": "complete", **await asyncio.to_thread(self._task, params.task_id)}

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
    ) -> HandlerResult:
        require_client_extension(ctx, TASKS_EXTENSION)
        task = await asyncio.to_thread(self._task, params.task_id)
        outstanding = task.get("inputRequests", {})
        for key, response in params.input_responses.items():
            if key not in outstanding or not isinstance(response, dict):
                continue  # unknown, already answered or superseded: ignored, as the spec asks
            action = response.get("action")
            if action == "accept":
                decision = response.get("content") or {}
            elif action == "decline":
                decision = {"approved": False, "declined": True}
            else:
                continue  # dismissed: the request stays outstanding
            try:
                await asyncio.to_thread(
                    self.service.store.resolve,
                    key,
                    value=Value(json.dumps(decision)),
                    ikey=f"decision:{key}",
                )
            except PromiseError:
                continue  # decided meanwhile (the first decision stands) or past its deadline
        return {"resultType": "complete"}

    async def _cancel(
        self, ctx: ServerRequestContext[Any, Any], params: TaskParams
    ) -> HandlerResult:
        require_client_extension(ctx, TASKS_EXTENSION)
        job_id = await asyncio.to_thread(self._job_of, params.task_id)
        # Already finished: cancellation is cooperative and acknowledged all the same.
        with contextlib.suppress(JobError):
            await asyncio.to_thread(self.service.cancel, job_id)
        return {"resultType": "complete"}
