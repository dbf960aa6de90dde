"""Task handles: the durable record behind an MCP task, whichever task shape made it.

Two task shapes exist and are not wire-compatible (``tasks_core`` serves the
2025-11-25 one, ``tasks_ext`` the 2026-07-28 extension). Both hand the client a task
id for a job; this module keeps that mapping in the store, so a task id resolves
after a crash and restart, and reads what a task looks like now:

* a task id is 32 random bytes (URL-safe), unguessable: the server has one
  authorization context (one bearer token, or the stdio client), so per the spec the
  id itself is the protection. Any client of this server may list them
  (``tasks/list``), so the id is kept in the store as it is;
* the record is a settled promise ``mcp-task.<task id>`` tagged
  ``agent_tools=mcp-task`` whose value names the job; it lives as long as the
  store's retention (the task's ``ttl``).
"""

from __future__ import annotations

import json
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from agent_tools.jobs import KIND_TAG, JobService, is_proxied, iso
from promises import InvalidArgument, Promise, PromiseNotFound, Value

PREFIX = "mcp-task."
#: ``_meta`` key of a tool answer that started a job in the background: the job's id.
#: The task shapes make a task only for such answers (an upstream tool's answer behind
#: the proxy may carry a ``job_id`` of its own; it never carries this key).
JOB_META = "agent-tools/job-id"
#: Set while a 2025-11-25 task-augmented call runs: the answer must be a task, so a
#: proxied call goes to the background at once instead of waiting to answer inline.
TASK_REQUESTED: ContextVar[bool] = ContextVar("agent_tools_task_requested", default=False)


def started_job(result: Any) -> str | None:
    """The job a tool answer started (its ``JOB_META``), or None."""
    data = (
        result.model_dump(by_alias=True, mode="json") if isinstance(result, BaseModel) else result
    )
    if not isinstance(data, dict) or data.get("isError"):
        return None
    job_id = (data.get("_meta") or {}).get(JOB_META)
    return job_id if isinstance(job_id, str) else None


TASK_TAG_VALUE = "mcp-task"
TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class TaskNotFound(Exception):
    """No task has this id (never created, or collected after its ttl)."""


@dataclass(frozen=True)
class TaskState:
    """A task now: its record, its job's status (``JobService.probe``) and when it changed."""

    task_id: str
    job_id: str
    created_at: str
    last_updated_at: str
    ttl_ms: int
    job: dict[str, Any]

    @property
    def approval(self) -> dict[str, Any] | None:
        """What a person is asked, while the job waits for an approval."""
        waiting = self.job.get("waiting_for") or {}
        return waiting if "approval" in waiting else None


class TaskHandles:
    def __init__(self, service: JobService) -> None:
        self.service = service

    @property
    def ttl_ms(self) -> int:
        return max(int(self.service.store.retention.total_seconds() * 1000), 0)

    def create(self, job_id: str) -> str:
        """A new task for ``job_id``; durable when this returns."""
        store = self.service.store
        task_id = secrets.token_urlsafe(32)
        record = PREFIX + task_id
        # Resolved at once: a settled record is kept for the retention period (the ttl).
        # A crash between the two leaves a pending record no task id was handed out for.
        store.create(record, timeout_at=store.clock() + 60_000, tags={KIND_TAG: TASK_TAG_VALUE})
        store.resolve(record, value=Value(json.dumps({"job_id": job_id})))
        return task_id

    def _record(self, task_id: object) -> Promise:
        if not isinstance(task_id, str) or not task_id or len(task_id) > 200:
            raise TaskNotFound(task_id)
        try:
            return self.service.store.get(PREFIX + task_id)
        except (PromiseNotFound, InvalidArgument) as exc:
            raise TaskNotFound(task_id) from exc

    def state(self, task_id: str) -> TaskState:
        record = self._record(task_id)
        return self._state(task_id, record)

    def _state(self, task_id: str, record: Promise, job: dict[str, Any] | None = None) -> TaskState:
        job_id = _job_id(record)
        job = job if job is not None else self.service.probe([job_id])[0]
        progress = job.get("progress") or {}
        created = iso(record.created_at) or ""
        moments = [created, job.get("updated_at"), job.get("finished_at"), progress.get("at")]
        return TaskState(
            task_id=task_id,
            job_id=job_id,
            created_at=created,
            last_updated_at=max(m for m in moments if m),
            ttl_ms=self.ttl_ms,
            job=job,
        )

    def list(self, cursor: str | None, limit: int = 50) -> tuple[list[TaskState], str | None]:
        """Tasks newest first; ``InvalidArgument`` for a cursor this store did not hand out."""
        page = self.service.store.search(
            f"{PREFIX}*", tags={KIND_TAG: TASK_TAG_VALUE}, limit=limit, cursor=cursor
        )
        records = []
        for record in page.promises:
            try:
                records.append((record, _job_id(record)))
            except (KeyError, ValueError):
                continue  # a record we cannot read is not a task anyone can use
        jobs = self.service.probe([job_id for _, job_id in records]) if records else []
        states = [
            self._state(record.id.removeprefix(PREFIX), record, job)  # one read for the page
            for (record, _), job in zip(records, jobs, strict=True)
        ]
        return states, page.cursor


def _job_id(record: Promise) -> str:
    return str(json.loads(record.value.data or "{}")["job_id"])


def job_result(state: TaskState) -> dict[str, Any]:
    """The ``CallToolResult`` of a finished task: the job's outcome, as the tools show it."""
    job = state.job
    if job["status"] == "completed" and is_proxied(job) and isinstance(job.get("result"), dict):
        return dict(job["result"])  # a proxied call: the upstream's answer as it gave it
    payload: dict[str, Any] = {"job_id": state.job_id}
    payload.update({k: job[k] for k in ("status", "result", "error") if k in job})
    return {
        "content": [{"type": "text", "text": json.dumps(payload)}],
        "structuredContent": payload,
        "isError": job["status"] != "completed",
    }


def status_message(state: TaskState) -> str:
    """One line for a person: progress, what the job waits for, or how it ended."""
    job = state.job
    status = job["status"]
    if status == "completed":
        return f"job {state.job_id} completed"
    if status in ("failed", "timed_out"):
        error = job.get("error") or {}
        return f"job {state.job_id} {status}: {error.get('message', 'no details')}"
    if status == "cancelled":
        return f"job {state.job_id} was cancelled"
    if status == "unknown":
        return f"job {state.job_id} no longer exists (collected after the retention period)"
    progress = job.get("progress") or {}
    if progress.get("message"):
        return str(progress["message"])
    waiting = job.get("waiting_for") or {}
    if "approval" in waiting:
        link = f" at {waiting['link']}" if waiting.get("link") else ""
        return f"waiting for a person to decide{link} (until {waiting.get('deadline')})"
    if "time" in waiting:
        return f"waiting until {waiting['time']}"
    return "working"


def approval_question(state: TaskState) -> str:
    approval = state.approval or {}
    request = approval.get("request")
    question = request.get("question") if isinstance(request, dict) else None
    return str(question or f"Job {state.job_id} asks for a decision: {json.dumps(request)}")
