"""What the pages show, built from the store (off the event loop) for the templates:
dashboard rows, a job's timeline and decisions, an approval's question. Values are
already in a person's terms here (relative times, calls, key/value details)."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import quote, urlencode

from agent_tools import approvals, operate
from agent_tools.jobs import JobError, JobService
from agent_tools.present import (
    FINISHED,
    call_text,
    duration,
    is_long,
    job_arguments,
    key_values,
    local_time,
    ms_of,
    pretty,
    relative,
    short_json,
)
from promises import STEP_TAG, Approval, InvalidArgument, Promise, PromiseNotFound
from promises.approvals import approval_of, list_approvals
from promises.context import ARGS_HEADER, STARTED_HEADER
from promises.views import JobView

PAGE_SIZE = 50
#: Stands for the first page in the trail of cursors that makes "Previous page".
FIRST = "~"


def job_path(job_id: str) -> str:
    """The page of a job, with the id encoded as one path segment (``a/../b`` stays
    itself; ids that are only dots go by query, since browsers resolve those)."""
    if set(job_id) == {"."}:
        return "/job?" + urlencode({"id": job_id})
    return "/jobs/" + quote(job_id, safe="")


def when(at_ms: int | None, now: int) -> dict[str, Any]:
    """A time for the templates: relative text, the server's local time, and ISO for
    the browser to show in its own zone."""
    from agent_tools.jobs import iso

    return {"ms": at_ms, "relative": relative(at_ms, now), "local": local_time(at_ms),
            "iso": iso(at_ms)}  # fmt: skip


def waiting_text(job: dict[str, Any], now: int) -> str:
    waiting = job.get("waiting_for") or {}
    if "approval" in waiting:
        return (waiting.get("request") or {}).get("question") or "a person's decision"
    if "time" in waiting:
        at = ms_of(waiting["time"])
        reason = waiting.get("reason")
        if reason:
            return f"{reason}, {relative(at, now)}"
        return f"its time, {relative(at, now)}"
    if waiting.get("promise"):
        return f"promise {waiting['promise']}"
    return ""


def needs_person(job: dict[str, Any], view: JobView | None) -> bool:
    """Waits on an approval (a question for a person), not on a program's promise."""
    if view is not None:
        return view.waited is not None and view.waited.approval
    return "approval" in (job.get("waiting_for") or {})


def no_worker(view: JobView | None, now: int) -> str:
    """'a worker with kind X (…)' when the job is ready but no worker with its kind lives."""
    wait = operate.worker_wait(view, now)
    if wait is None:
        return ""
    seen = ms_of(wait["last_seen"])
    since = f"none alive since {relative(seen, now)}" if seen else "none has run"
    return f"a worker with kind {wait['kind']} ({since})"


def wait_began(job: dict[str, Any], view: JobView | None, now: int) -> int:
    """When a waiting job's wait began: the timer or approval it waits on was made, or
    else its task last changed (when it was put to wait), or became ready for a worker
    that has not come."""
    created = ms_of(job.get("created_at")) or now
    began = created
    if view is not None and not view.promise.timer:
        if view.waited is not None:
            began = view.waited.created_at
        elif view.task is not None:
            began = view.task.updated_at
            if view.task.ready_at <= now:
                began = max(began, view.task.ready_at)
    return max(began, created)


def since(job: dict[str, Any], view: JobView | None, now: int) -> str:
    """Say "took 22 s" for a finished job; for one still going, "running for 3 min" (since
    it started) or "waiting for 2 h" (since its wait began)."""
    created = ms_of(job.get("created_at")) or now
    if job["status"] in FINISHED:
        return "took " + duration((ms_of(job.get("finished_at")) or now) - created)
    if job["status"] == "waiting":
        return "waiting for " + duration(now - wait_began(job, view, now))
    return "running for " + duration(now - created)


def dashboard_row(job: dict[str, Any], now: int, view: JobView | None = None) -> dict[str, Any]:
    created = ms_of(job.get("created_at"))
    waiting = job.get("waiting_for") or {}
    progress = job.get("progress") if job["status"] not in FINISHED else None
    workerless = no_worker(view, now)
    return {
        "job_id": job["job_id"],
        "path": job_path(job["job_id"]),
        "kind": job.get("kind") or "",
        "status": job["status"],
        "needs_person": needs_person(job, view),
        "approval_link": waiting.get("link"),
        "waiting_for": workerless or (waiting_text(job, now) if job["status"] == "waiting" else ""),
        "started": when(created, now),
        "took": since(job, view, now),
        "progress": progress,
        "error": job.get("error") if job["status"] in FINISHED else None,
    }


def fingerprint(jobs: list[dict[str, Any]], asking: int) -> str:
    """Changes when anything shown for these jobs changes (status, wait, progress), or
    the number of approvals waiting for a person (the banner at the top)."""
    seen = [(j["job_id"], j["status"], short_json(j.get("waiting_for"), 400),
             short_json(j.get("progress"), 400)) for j in jobs]  # fmt: skip
    return hashlib.sha256(json.dumps([seen, asking]).encode()).hexdigest()[:16]


#: The approvals counted for the banner, at most (one page of the pending-tag index).
ASKING_SHOWN = 1000


def asking(service: JobService) -> dict[str, Any]:
    """How many approvals wait for a person, over all jobs: one walk of the index of
    pending promises' tags (approvals only), not a scan of the jobs."""
    found, more = list_approvals(service.store, state="pending", limit=ASKING_SHOWN)
    n = len(found)
    if n == 1 and not more:
        text = "1 approval needs a person"
    else:
        text = f"{n}{'+' if more else ''} approvals need a person"
    return {"count": n, "text": text}


def _needing_person(service: JobService, cursor: str | None) -> dict[str, Any]:
    """The jobs whose approvals wait for a person, newest approval first, a page."""
    try:
        found, next_cursor = list_approvals(service.store, state="pending", limit=PAGE_SIZE,
                                            cursor=cursor)  # fmt: skip
    except InvalidArgument as exc:
        raise JobError(
            "this page's cursor is not one this server handed out for these jobs; "
            "start again from the first page"
        ) from exc
    ids = list(dict.fromkeys(a.job_id for a in found if a.job_id))
    statuses = service.statuses(ids) if ids else {}
    return {"jobs": [statuses[i] for i in ids if i in statuses], "next_cursor": next_cursor}


def _page(service: JobService, status: str | None, kind: str | None, cursor: str | None,
          needs: str | None) -> dict[str, Any]:  # fmt: skip
    if needs == "person":
        return _needing_person(service, cursor)
    return service.list_jobs(status, kind, PAGE_SIZE, cursor)


def dashboard(service: JobService, status: str | None, kind: str | None, cursor: str | None,
              back: list[str], needs: str | None = None) -> dict[str, Any]:  # fmt: skip
    now = service.store.clock()
    if needs == "person":
        status = kind = None
    page = _page(service, status, kind, cursor, needs)
    # Still a scan of every job kept (7 s at 100k jobs on SQLite): the store has no count
    # yet; one grouped query on its tag index would take ~0.15 s.
    counts = operate.count_jobs(service)
    counts.pop("pending_ids")
    people = asking(service)
    if needs == "person":
        total = people["count"]
    elif kind:
        per_status = counts["kinds"].get(kind, {})
        total = per_status.get(status, 0) if status else sum(per_status.values())
    else:
        total = counts["jobs"].get(status, 0) if status else sum(counts["jobs"].values())
    filters = {k: v for k, v in (("status", status), ("kind", kind), ("needs", needs)) if v}
    next_url = prev_url = None
    if page["next_cursor"]:
        trail = [*back, cursor or FIRST]
        next_url = "/?" + urlencode({**filters, "cursor": page["next_cursor"],
                                     "back": ",".join(trail)})  # fmt: skip
    if cursor:
        previous = back[-1] if back else FIRST
        query = {**filters, **({"cursor": previous} if previous != FIRST else {})}
        if back[:-1]:
            query["back"] = ",".join(back[:-1])
        prev_url = "/?" + urlencode(query) if query else "/"
    first = len(back) * PAGE_SIZE + 1 if cursor else 1
    views = service.runtime.views([j["job_id"] for j in page["jobs"]]) if page["jobs"] else {}
    rows = [dashboard_row(j, now, views.get(j["job_id"])) for j in page["jobs"]]
    return {
        "jobs": rows,
        "counts": counts["jobs"],
        "asking": people,
        "needs": needs,
        "total": total,
        "first": first,
        "last": first + len(page["jobs"]) - 1,
        "next_url": next_url,
        "prev_url": prev_url,
        "version": fingerprint(page["jobs"], people["count"]),
        "filters": filters,
        "count_links": {
            s: "/?" + urlencode({"status": s, **({"kind": kind} if kind else {})})
            for s in counts["jobs"]
        },
    }


def changes(service: JobService, status: str | None, kind: str | None,
            cursor: str | None, needs: str | None = None) -> str:  # fmt: skip
    if needs == "person":
        status = kind = None
    return fingerprint(_page(service, status, kind, cursor, needs)["jobs"],
                       asking(service)["count"])  # fmt: skip


# -- one job ------------------------------------------------------------------------------


def _children(service: JobService, job_id: str) -> list[Promise]:
    found: list[Promise] = []
    cursor = None
    while True:
        page = service.store.search(f"{job_id}.*", limit=1000, cursor=cursor)
        found += page.promises
        if page.cursor is None or len(found) >= 5000:
            return sorted(found, key=lambda p: (p.created_at, p.id))
        cursor = page.cursor


def _step_label(child: Promise, job_id: str) -> tuple[str, str]:
    """A step's lane label: its position, its function's name, and its arguments as the
    engine recorded them (``promises:args``)."""
    suffix = child.id.removeprefix(job_id)
    name = child.param.headers.get(STEP_TAG, "")
    short = name.split(":")[-1].split(".")[-1]
    arguments = child.param.headers.get(ARGS_HEADER)
    if arguments is None:
        return "step", f"{suffix} {short}"
    return "step", f"{suffix} {short}({arguments})"


def _began(child: Promise) -> int:
    """When a child began: a step records its start (its promise is made when it ends)."""
    started = child.param.headers.get(STARTED_HEADER, "")
    return int(started) if started.isdigit() else child.created_at


def _running_step(
    children: list[Promise], job_id: str, view: JobView | None, start: int, now: int
) -> dict[str, Any] | None:
    """The step a running job is in now, as far as the store knows: its id is the next
    one (or the one being retried), it began when the task last wrote (its claim, or the
    record of the step before) or the step before ended; its name is known when it ends."""
    task = view.task if view is not None else None
    if task is None or task.state != "claimed" or task.waiting_on is not None:
        return None
    done = {c.id for c in children}
    attempt = None
    if task.step_id and task.step_id.startswith(job_id + ".") and task.step_id not in done:
        step_id, attempt = task.step_id, task.step_attempt + 1
    else:
        direct = [c.id for c in children if c.id.count(".") == job_id.count(".") + 1]
        numbers = [int(i.rsplit(".", 1)[1]) for i in direct if i.rsplit(".", 1)[1].isdigit()]
        step_id = f"{job_id}.{max(numbers) + 1 if numbers else 0}"
    ended = [c.settled_at or c.created_at for c in children if not c.pending]
    began = max([start, task.updated_at, *ended])
    label = f"{step_id.removeprefix(job_id)} in progress"
    if task.progress is not None:
        label += f": {task.progress.message}"
    return {"id": step_id, "began": min(began, now), "label": label, "attempts": attempt}


def job_page(service: JobService, job_id: str) -> dict[str, Any] | None:
    job = service.probe([job_id])[0]
    if job["status"] == "unknown":
        return None
    try:
        promise = service.store.get(job_id)
    except PromiseNotFound:
        return None
    now = service.store.clock()
    view = service.runtime.views([job_id]).get(job_id)
    start, end = promise.created_at, promise.settled_at or now
    span = max(end - start, 1)
    timeline, decisions = [], []
    children = _children(service, job_id)
    asked = {c.id: approval_of(c, promise) for c in children if c.approval}

    def lane(kind: str, id: str, label: str, began: int, ended: int, *, at: int | None = None,
             still_going: bool, cut_short: bool = False, failed: bool = False,
             attempts: Any = None) -> dict[str, Any]:  # fmt: skip
        left = round(min(100 * (began - start) / span, 99.6), 2)
        width = min(max(100 * (ended - began) / span, 0.4), 100 - left)
        return {
            "id": id, "label": label, "at": when(at, now) if at is not None else None,
            "kind": kind, "left": left, "width": round(width, 2),
            "duration": duration(ended - began)
            + (" so far" if still_going else " (cut short)" if cut_short else ""),
            "attempts": None if attempts is None else str(attempts),
            "pending": still_going, "failed": failed,
        }  # fmt: skip

    for child in children:
        began = max(_began(child), start)
        approval = asked.get(child.id)
        kind, label, at = _lane(child, job_id, approval)
        if approval is not None and approval.state != "pending":
            decided_at = approval.decision.at if approval.decision else None
            decisions.append({**approvals.as_dict(approval), "at": when(decided_at, now)})
        timeline.append(lane(
            kind, child.id, label, began, min(child.settled_at or end, end), at=at,
            still_going=child.pending and promise.pending,
            cut_short=child.pending and not promise.pending,
            failed=child.state.startswith("rejected"),
            attempts=child.value.headers.get("attempts"),
        ))  # fmt: skip
    running = _running_step(children, job_id, view, start, now) if promise.pending else None
    if running is not None:
        timeline.append(lane("step", running["id"], running["label"], running["began"], end,
                             still_going=True, attempts=running["attempts"]))  # fmt: skip
    arguments, positional = job_arguments(promise, service.runtime.registry)
    result_text = pretty(job.get("result")) if job["status"] == "completed" else None
    rerun_of = promise.tags.get(operate.RERUN_TAG)
    reruns = [
        p.id for p in service.store.search(tags={operate.RERUN_TAG: job_id}, limit=20).promises
    ]
    waiting = job.get("waiting_for") or {}
    return {
        "title": job_id,
        "job": job,
        "path": job_path(job_id),
        "call": call_text(job.get("kind"), arguments, 160, positional),
        "arguments": key_values(arguments)
        + [(f"argument {n}", short_json(v, 300)) for n, v in enumerate(positional, 1)],
        "result": result_text,
        "result_rows": key_values(job.get("result")) if isinstance(job.get("result"), dict) else [],
        "result_long": result_text is not None and is_long(result_text),
        "started": when(start, now),
        "finished": when(promise.settled_at, now) if promise.settled_at else None,
        "waiting_since": when(wait_began(job, view, now), now)
        if job["status"] == "waiting"
        else None,
        "took": duration(end - start),
        "total": duration(end - start) + ("" if promise.settled_at else " so far"),
        "progress": job.get("progress") if job["status"] not in FINISHED else None,
        "waiting_text": no_worker(view, now)
        or (waiting_text(job, now) if job["status"] == "waiting" else ""),
        "needs_person": needs_person(job, view),
        "approval_link": waiting.get("link"),
        "deadline": when(ms_of(waiting.get("deadline")), now) if waiting.get("deadline") else None,
        "decisions": decisions,
        "timeline": timeline,
        "rerun_of": {"id": rerun_of, "path": job_path(rerun_of)} if rerun_of else None,
        "reruns": [{"id": r, "path": job_path(r)} for r in reruns],
        "cancellable": promise.pending,
    }


def _lane(child: Promise, job_id: str, approval: Approval | None) -> tuple[str, str, int | None]:
    """A child's lane: its kind, its label, and a time the label ends with (shown in the
    reader's zone by the page)."""
    suffix = child.id.removeprefix(job_id)
    if child.timer:
        return "sleep", f"{suffix} sleep until", child.timeout_at
    if approval is not None:
        return "approval", f"{suffix} a person: {approval.question}", None
    if child.param.headers.get(STEP_TAG) == "promise":
        return "promise", f"{suffix} waiting for a promise", None
    return (*_step_label(child, job_id), None)


# -- an approval --------------------------------------------------------------------------


def approval_page(service: JobService, approval: Approval) -> dict[str, Any]:
    now = service.store.clock()
    kind = None
    if approval.job_id:
        try:
            kind = service.probe([approval.job_id])[0].get("kind")
        except Exception:
            kind = None
    details = approval.details
    return {
        "title": "Decision needed",
        "approval": approval,
        "kind": kind,
        "job_path": job_path(approval.job_id) if approval.job_id else None,
        "details": key_values(details, 2000) if details is not None else [],
        "details_long": {k for k, v in key_values(details, 2000) if is_long(v, 4, 240)}
        if details is not None
        else set(),
        "asked": when(approval.created_at, now),
        "deadline": when(approval.deadline, now),
    }
