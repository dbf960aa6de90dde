"""Approvals: promises a job creates for a *person* to decide.

``ctx.approval(question, details=..., timeout=...)`` makes one (a promise tagged
``promises:approval``); the job waits on it without holding a worker. People decide it
through ``decide`` — the CLI, the approval page, an MCP client's elicitation or
``tasks/update`` all land here — and only approvals can be decided that way: a
promise a program settles (``ctx.promise``), a step, a timer or a job cannot.

The first decision stands. A decision after the deadline, or after the job that asked
has ended, is refused, with a message meant for the person who tried.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from promises.errors import (
    AlreadyDecided,
    ApprovalExpired,
    ApprovalWithdrawn,
    InvalidArgument,
    NotAnApproval,
    PromiseAlreadySettled,
    PromiseNotFound,
)
from promises.records import APPROVAL_TAG, JOB_TAG, STEP_TAG, Promise, Value

if TYPE_CHECKING:
    from promises.store import SqlStore

ApprovalState = Literal["pending", "approved", "rejected", "expired", "withdrawn"]
_CHILD_SUFFIX = re.compile(r"(\.[0-9]+)+$")
MAX_COMMENT = 2000


@dataclass(frozen=True)
class Decision:
    approved: bool
    comment: str | None = None
    #: Who decided, as they were known where they decided ("cli:alice", "page", ...).
    by: str | None = None
    #: When (ms since the epoch).
    at: int = 0


@dataclass(frozen=True)
class Approval:
    id: str
    job_id: str | None
    question: str
    details: Any
    deadline: int
    created_at: int
    state: ApprovalState
    decision: Decision | None


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def decision_of(promise: Promise) -> Decision | None:
    if promise.state != "resolved":
        return None
    try:
        raw = json.loads(promise.value.data or "null")
    except ValueError:
        raw = None
    return decision_from(raw, promise.settled_at or 0)


def decision_from(raw: Any, settled_at: int) -> Decision:
    """A decision as stored; also the older forms (no ``at``, or ``at`` in seconds)."""
    if not isinstance(raw, dict):
        return Decision(approved=bool(raw), at=settled_at)
    at = raw.get("at")
    if isinstance(at, int | float) and not isinstance(at, bool):
        at = int(at * 1000) if at < 100_000_000_000 else int(at)  # seconds, then ms
    else:
        at = settled_at
    return Decision(
        approved=bool(raw.get("approved")),
        comment=raw.get("comment") if isinstance(raw.get("comment"), str) else None,
        by=raw.get("by") if isinstance(raw.get("by"), str) else None,
        at=at,
    )


def job_id_of(promise: Promise) -> str | None:
    try:
        request = json.loads(promise.param.data or "null")
    except ValueError:
        request = None
    if isinstance(request, dict) and isinstance(request.get("job_id"), str):
        return str(request["job_id"])
    parent = _CHILD_SUFFIX.sub("", promise.id)
    return parent if parent != promise.id else None


def approval_of(promise: Promise, job: Promise | None) -> Approval:
    """What a person is asked, and where it stands. ``job``: the job that asked."""
    if not promise.approval:
        raise NotAnApproval(_not_an_approval(promise))
    try:
        request = json.loads(promise.param.data or "null")
    except ValueError:
        request = None
    if not isinstance(request, dict):
        request = {"details": request}
    decision = decision_of(promise)
    state: ApprovalState
    if promise.state == "resolved" and decision is not None:
        state = "approved" if decision.approved else "rejected"
    elif promise.state == "rejected_timedout":
        state = "expired"
    elif promise.pending and (job is None or job.pending):
        state = "pending"
    else:
        state = "withdrawn"
    job_id = job.id if job is not None else job_id_of(promise)
    question = request.get("question")
    return Approval(
        id=promise.id,
        job_id=job_id,
        question=str(question) if question else f"Job {job_id} asks for a decision",
        details=request.get("details"),
        deadline=promise.timeout_at,
        created_at=promise.created_at,
        state=state,
        decision=decision,
    )


def _not_an_approval(promise: Promise) -> str:
    if JOB_TAG in promise.tags:
        what = "a job"
    elif promise.timer:
        what = "a timer"
    elif promise.param.headers.get(STEP_TAG) not in (None, "promise"):
        what = f"a step of job {job_id_of(promise)}"
    else:
        what = "a promise a program settles"
    return (
        f"{promise.id!r} is not something a person decides: it is {what}. Only approvals "
        "(questions a job asks a person) can be approved or rejected; "
        "`agent-tools approvals` lists the open ones"
    )


def _job_of(store: SqlStore, promise: Promise) -> Promise | None:
    job_id = job_id_of(promise)
    if job_id is None:
        return None
    try:
        return store.get(job_id)
    except PromiseNotFound:
        return None


def get_approval(store: SqlStore, approval_id: str) -> Approval:
    """The approval ``approval_id``; ``NotAnApproval`` for any other promise."""
    promise = store.get(approval_id)
    return approval_of(promise, _job_of(store, promise) if promise.approval else None)


def _closed(approval: Approval) -> Exception:
    decision = approval.decision
    if approval.state in ("approved", "rejected") and decision is not None:
        who = f" by {decision.by}" if decision.by else ""
        said = f" with the comment {decision.comment!r}" if decision.comment else ""
        return AlreadyDecided(
            f"This was already {approval.state}{who} on {_when(decision.at)}{said}. "
            "The first decision stands.",
            approval,
        )
    if approval.state == "expired":
        return ApprovalExpired(
            f"This approval expired on {_when(approval.deadline)} without a decision; "
            "the job went on without it.",
            approval,
        )
    return ApprovalWithdrawn(
        f"This approval is no longer needed: job {approval.job_id} has ended "
        "(it finished, failed or was cancelled).",
        approval,
    )


def decide(
    store: SqlStore,
    approval_id: str,
    *,
    approved: bool,
    comment: str | None = None,
    by: str | None = None,
) -> Approval:
    """Decide an approval; returns it decided. Raises ``NotAnApproval``, or an
    ``ApprovalClosed`` (``AlreadyDecided``, ``ApprovalExpired``, ``ApprovalWithdrawn``)
    whose message is for the person who tried."""
    if not isinstance(approved, bool):
        raise InvalidArgument(f"approved must be true or false, got {approved!r:.40}")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise InvalidArgument(f"a comment must be text of at most {MAX_COMMENT} characters")
    if by is not None and (not isinstance(by, str) or len(by) > 200):
        raise InvalidArgument("'by' must be text of at most 200 characters")
    current = get_approval(store, approval_id)
    if current.state != "pending":
        raise _closed(current)
    value = {"approved": approved, "comment": comment or None, "by": by, "at": store.clock()}
    try:
        transition = store.resolve(
            approval_id, value=Value(json.dumps(value)), ikey=f"decision:{approval_id}"
        )
    except PromiseAlreadySettled:
        raise _closed(get_approval(store, approval_id)) from None
    decided = get_approval(store, approval_id)
    if not transition.fresh:
        raise _closed(decided)
    return decided


def list_approvals(
    store: SqlStore,
    *,
    state: Literal["pending"] | None = "pending",
    limit: int = 50,
    cursor: str | None = None,
    job_id: str | None = None,
) -> tuple[list[Approval], str | None]:
    """Approvals newest first: by default the ones waiting for a person; ``state=None``
    for all of them; ``job_id``: only those that job asked (decided or not). Pass the
    returned cursor for the next page."""
    page = store.search(
        "*" if job_id is None else f"{job_id}.*",
        tags={APPROVAL_TAG: "true"},
        state="pending" if state == "pending" else None,
        limit=limit,
        cursor=cursor,
    )
    promises = page.promises
    if job_id is not None:  # the id pattern is a glob: a '*' in job_id matches more
        promises = [p for p in promises if job_id_of(p) == job_id]
    job_ids = {j for j in map(job_id_of, promises) if j is not None}
    jobs = store.get_many(sorted(job_ids)) if job_ids else {}
    found = [approval_of(p, jobs.get(job_id_of(p) or "")) for p in promises]
    if state == "pending":
        found = [a for a in found if a.state == "pending"]
    return found, page.cursor
