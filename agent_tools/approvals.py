"""Approvals as people meet them, on the engine's approvals (``promises.approvals``).

Only approvals — questions a job asks a person (``ctx.approval``) — may be decided by
people, on the command line or the approval page; the engine refuses anything else
with a message that says what it is. Here the engine's answers are put in a person's
terms: times in the reader's zone and relative ("3 hours ago"), who decided and what
they said.
"""

from __future__ import annotations

from typing import Any

from agent_tools.present import local_time, relative
from promises import (
    JOB_TAG,
    Approval,
    ApprovalClosed,
    InvalidArgument,
    PromiseError,
    PromiseNotFound,
    SqlStore,
    get_approval,
    list_approvals,
)
from promises import decide as engine_decide


class ApprovalError(Exception):
    """A decision that cannot be made; the message is for the person who tried."""


class NotAnApproval(ApprovalError):
    pass


class AlreadyDecided(ApprovalError):
    pass


class ApprovalClosedError(ApprovalError):
    """Expired, or its job ended before anyone decided."""


def as_dict(approval: Approval) -> dict[str, Any]:
    decision = approval.decision
    return {
        "id": approval.id, "job_id": approval.job_id, "question": approval.question,
        "details": approval.details, "state": approval.state, "deadline": approval.deadline,
        "created_at": approval.created_at,
        "approved": decision.approved if decision else None,
        "comment": decision.comment if decision else None,
        "by": decision.by if decision else None,
        "decided_at": decision.at if decision else None,
    }  # fmt: skip


def get(store: SqlStore, approval_id: str) -> Approval:
    try:
        return get_approval(store, approval_id)
    except PromiseNotFound as exc:
        raise ApprovalError(
            f"nothing has the id {approval_id!r}; agent-tools approvals lists what waits "
            "for a person"
        ) from exc
    except InvalidArgument as exc:  # NotAnApproval, or a malformed id
        message = str(exc)
        try:
            if JOB_TAG in store.get(approval_id).tags:
                message += f". To stop the job instead: agent-tools jobs cancel {approval_id}"
        except PromiseError:
            pass
        raise NotAnApproval(message) from exc


def closed_message(approval: Approval, now: int) -> str:
    """Why nobody can decide ``approval`` any more, for a person."""
    decision = approval.decision
    if approval.state in ("approved", "rejected") and decision is not None:
        who = f" by {decision.by}" if decision.by else ""
        when = f"{local_time(decision.at)} ({relative(decision.at, now)})"
        said = f' with the comment "{decision.comment}"' if decision.comment else ""
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
    get(store, approval_id)  # not found / not an approval, in our words
    try:
        return engine_decide(store, approval_id, approved=approved, comment=comment, by=by)
    except ApprovalClosed as exc:
        closed: Approval = exc.approval
        kind = AlreadyDecided if closed.state in ("approved", "rejected") else ApprovalClosedError
        raise kind(closed_message(closed, store.clock())) from exc
    except PromiseError as exc:
        raise ApprovalError(str(exc)) from exc


def pending(store: SqlStore, limit: int = 1000) -> list[Approval]:
    """Every approval waiting for a person, newest first (up to ``limit``)."""
    found: list[Approval] = []
    cursor = None
    while len(found) < limit:
        page, cursor = list_approvals(store, state="pending", limit=200, cursor=cursor)
        found += page
        if cursor is None:
            break
    return found[:limit]
