"""Approvals as people meet them: what a job asks a person, and their decision.

Only approvals — promises a job created for a person, with a question — may be
decided by people (on the command line or the approval page). A job, a step, a timer
or a promise a job made for a program is refused with a message that says what it is
and what to do instead. An approval already decided, expired, or whose job has ended
is answered in a person's words.

The decision is stored as the approval promise's value: ``{"approved", "comment"}``
plus ``"by"`` when the person gave a name; ``settled_at`` says when.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from agent_tools.present import local_time, relative
from promises import (
    JOB_TAG,
    STEP_TAG,
    Promise,
    PromiseError,
    PromiseNotFound,
    SqlStore,
    Value,
)

ApprovalState = Literal["pending", "approved", "rejected", "expired", "withdrawn"]


class ApprovalError(Exception):
    """A decision that cannot be made; the message is for the person who tried."""


class NotAnApproval(ApprovalError):
    pass


class AlreadyDecided(ApprovalError):
    pass


class ApprovalClosed(ApprovalError):
    """Expired, or its job ended before anyone decided."""


@dataclass(frozen=True)
class Approval:
    id: str
    job_id: str | None
    question: str
    details: Any
    deadline: int
    created_at: int
    state: ApprovalState
    approved: bool | None = None
    comment: str | None = None
    by: str | None = None
    decided_at: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "job_id": self.job_id, "question": self.question,
            "details": self.details, "state": self.state, "deadline": self.deadline,
            "created_at": self.created_at, "approved": self.approved, "comment": self.comment,
            "by": self.by, "decided_at": self.decided_at,
        }  # fmt: skip


def job_of(store: SqlStore, promise_id: str) -> str | None:
    """The job a step-like id (``job.0``, ``job.1.0``) belongs to."""
    prefix = promise_id
    while "." in prefix:
        prefix = prefix.rsplit(".", 1)[0]
        try:
            if JOB_TAG in store.get(prefix).tags:
                return prefix
        except PromiseError:
            continue
    return None


def _request(promise: Promise) -> dict[str, Any] | None:
    """The question and details of a promise a job made for a person, else None."""
    if promise.param.headers.get(STEP_TAG) != "promise" or not promise.param.data:
        return None
    try:
        data = json.loads(promise.param.data)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("question"), str):
        return None
    return data


def what_it_is(store: SqlStore, promise: Promise) -> str:
    if JOB_TAG in promise.tags:
        return (
            f"{promise.id!r} is a job, not an approval: only a question a job asks a person "
            f"can be approved or rejected. To stop the job: agent-tools jobs cancel {promise.id}"
        )
    if promise.timer:
        return f"{promise.id!r} is a timer, not an approval; a timer ends at its time"
    job = job_of(store, promise.id)
    owner = f" of job {job!r}" if job else ""
    if promise.param.headers.get(STEP_TAG) == "promise":
        return (
            f"{promise.id!r} is a promise{owner} for a program, not a question for a person; "
            "programs settle it through the store"
        )
    return f"{promise.id!r} is a step{owner}, not an approval; steps end by themselves"


def read(store: SqlStore, promise: Promise) -> Approval:
    """The approval ``promise`` is (``NotAnApproval`` otherwise)."""
    request = _request(promise)
    if request is None:
        raise NotAnApproval(what_it_is(store, promise))
    job_id = job_of(store, promise.id)
    common = {
        "id": promise.id, "job_id": job_id, "question": request["question"],
        "details": request.get("details"), "deadline": promise.timeout_at,
        "created_at": promise.created_at,
    }  # fmt: skip
    if promise.state == "resolved":
        try:
            decision = json.loads(promise.value.data or "null")
        except ValueError:
            decision = None
        if not isinstance(decision, dict):
            decision = {"approved": bool(decision)}
        return Approval(
            **common,
            state="approved" if decision.get("approved") else "rejected",
            approved=bool(decision.get("approved")),
            comment=decision.get("comment"),
            by=decision.get("by"),
            decided_at=promise.settled_at,
        )
    if promise.state == "rejected_timedout":
        return Approval(**common, state="expired")
    if not promise.pending:
        return Approval(**common, state="withdrawn", decided_at=promise.settled_at)
    if job_id is not None:
        try:
            if not store.get(job_id).pending:
                return Approval(**common, state="withdrawn")
        except PromiseNotFound:
            pass
    return Approval(**common, state="pending")


def get(store: SqlStore, approval_id: str) -> Approval:
    try:
        promise = store.get(approval_id)
    except PromiseNotFound as exc:
        raise ApprovalError(f"nothing has the id {approval_id!r}; agent-tools approvals lists "
                            "what waits for a person") from exc  # fmt: skip
    except PromiseError as exc:
        raise ApprovalError(str(exc)) from exc
    return read(store, promise)


def closed_message(approval: Approval, now: int) -> str:
    """Why nobody can decide ``approval`` any more, for a person."""
    if approval.state in ("approved", "rejected"):
        who = f" by {approval.by}" if approval.by else ""
        when = f"{local_time(approval.decided_at)} ({relative(approval.decided_at, now)})"
        said = f' with the comment "{approval.comment}"' if approval.comment else ""
        return f"This was already {approval.state}{who} on {when}{said}. The first decision stands."
    if approval.state == "expired":
        return (
            f"This approval expired on {local_time(approval.deadline)} "
            f"({relative(approval.deadline, now)}) without a decision; the job went on without it."
        )
    job = f"its job {approval.job_id!r}" if approval.job_id else "the job that asked"
    return f"Nobody waits for this decision any more: {job} has ended."


def decide(
    store: SqlStore,
    approval_id: str,
    *,
    approved: bool,
    comment: str | None = None,
    by: str | None = None,
) -> Approval:
    """Record a person's decision; the first one stands."""
    approval = get(store, approval_id)
    if approval.state != "pending":
        raise (AlreadyDecided if approval.state in ("approved", "rejected") else ApprovalClosed)(
            closed_message(approval, store.clock())
        )
    decision: dict[str, Any] = {"approved": approved, "comment": comment}
    if by:
        decision["by"] = by
    try:
        transition = store.resolve(
            approval_id, value=Value(json.dumps(decision)), ikey=f"decision:{approval_id}"
        )
    except PromiseError:
        transition = None
    now_state = read(store, store.get(approval_id))
    if transition is None or not transition.fresh:
        # Someone else decided (or the deadline passed) between our read and our write.
        raise (AlreadyDecided if now_state.state in ("approved", "rejected") else ApprovalClosed)(
            closed_message(now_state, store.clock())
        )
    return now_state


def for_target(store: SqlStore, target: str, waiting_on: str | None) -> str:
    """The approval a person means by ``target``: its own id, or the id of a job
    waiting on one (``waiting_on``)."""
    return waiting_on if waiting_on is not None else target


def pending(store: SqlStore, jobs: list[dict[str, Any]]) -> list[Approval]:
    """The approvals that the waiting ``jobs`` (``JobService`` dicts) wait for."""
    found = []
    for job in jobs:
        approval_id = (job.get("waiting_for") or {}).get("approval")
        if approval_id is None:
            continue
        try:
            approval = get(store, approval_id)
        except ApprovalError:
            continue
        if approval.state == "pending":
            found.append(approval)
    return found
