"""A job's status as agents, pages and the CLI read it, from one read of the job
(``promises.JobView``: its promise, its task, what it waits on, whether a worker
with its kind is alive).

The rules: settled → ``completed`` / ``failed`` / ``cancelled`` / ``timed_out``; a
timer → ``waiting`` for its time; a claimed task → ``running`` (with the job's own
progress); a task waiting on a promise → ``waiting`` for it (a time, a person's
decision, another promise); a task ready later → ``waiting`` (a scheduled start, or a
retry's backoff); a task ready now with no live worker for its kind → ``waiting`` for
such a worker; else ``running`` (about to run). A finished job shows no progress.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agent_tools.scheduling import iso
from promises import JobView, Promise, TaskInfo
from promises.approvals import approval_of
from promises.codec import ErrorInfo

#: Makes the web link of an approval id, when the pages are served.
LinkMaker = Callable[[str], str]


def status_of(view: JobView, now: int, link: LinkMaker | None = None) -> dict[str, Any]:
    promise = view.promise
    out: dict[str, Any] = {
        "job_id": promise.id,
        "type": "timer" if promise.timer else "job",
        "kind": view.kind or ("timer" if promise.timer else None),
        "created_at": iso(promise.created_at),
    }
    if not promise.pending:
        out.update(_finished(promise))
        _task_facts(view.task, out, finished=True)
        return out
    out["deadline"] = iso(view.deadline)
    task = view.task
    if promise.timer:
        out.update(status="waiting", waiting_for={"time": iso(promise.timeout_at)})
    elif task is None or (task.state == "claimed" and view.worker is None):
        out["status"] = "running"  # held by a live lease (one that ran out is judged below)
    elif task.waiting_on is not None:
        out.update(status="waiting", waiting_for=_waited(view, link))
    elif task.ready_at > now:
        reason = (
            f"retrying step {task.step_id} (attempt {task.step_attempt + 1}) after a failure"
            if task.step_attempt > 0
            else "scheduled start"
        )
        out.update(status="waiting", waiting_for={"time": iso(task.ready_at), "reason": reason})
    elif view.worker is not None and not view.worker.alive:
        seen = view.worker.last_seen
        since = f"last seen {iso(seen)}" if seen is not None else "none has run on this store"
        out.update(
            status="waiting",
            waiting_for={
                "worker": view.worker.kind,
                "reason": f"no running worker has the kind {view.worker.kind!r} loaded ({since});"
                f" start one with `agent-tools worker --jobs <module>`",
            },
        )
    else:
        out["status"] = "running"
    _task_facts(task, out, finished=False)
    return out


def _finished(promise: Promise) -> dict[str, Any]:
    out: dict[str, Any] = {
        "finished_at": iso(promise.settled_at),
        "duration_s": round(((promise.settled_at or 0) - promise.created_at) / 1000, 3),
    }
    if promise.state == "resolved":
        out["status"] = "completed"
        out["result"] = json.loads(promise.value.data) if promise.value.data else None
    elif promise.state == "rejected_canceled":
        out["status"] = "cancelled"
    elif promise.state == "rejected_timedout":
        out["status"] = "timed_out"
        out["error"] = {
            "type": "TimeoutError",
            "message": f"the job did not finish by its deadline, {iso(promise.timeout_at)}",
        }
    else:
        info = ErrorInfo.from_json(promise.value.data)
        out["status"] = "failed"
        out["error"] = {"type": info.type, "message": info.message}
    return out


def _waited(view: JobView, link: LinkMaker | None) -> dict[str, Any]:
    waited = view.waited
    if waited is None:
        return {"promise": view.waited_on}
    if waited.timer:
        return {"time": iso(waited.timeout_at)}
    if not waited.approval:
        return {"promise": waited.id, "deadline": iso(waited.deadline)}
    approval = approval_of(waited, view.promise)
    out: dict[str, Any] = {
        "approval": approval.id,
        "question": approval.question,
        "deadline": iso(waited.deadline),
        "request": {"question": approval.question, "details": approval.details},
    }
    if link is not None:
        out["link"] = link(approval.id)
    return out


def _task_facts(task: TaskInfo | None, out: dict[str, Any], *, finished: bool) -> None:
    if task is None:
        return
    out["attempts"] = task.attempts
    out["updated_at"] = iso(task.updated_at)
    if task.progress is not None and not finished:
        out["progress"] = {
            "message": task.progress.message,
            "fraction": task.progress.fraction,
            "at": iso(task.progress.at),
        }
