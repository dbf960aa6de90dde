"""What operators do from the command line, as data (``--json``) and as text.

Each command returns a dict (what ``--json`` prints); ``render_<command>`` makes the
text a person reads. Reads go through ``JobService`` (the statuses agents see) and
the store; nothing here knows SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from agent_tools import approvals
from agent_tools.config import ConfigError
from agent_tools.jobs import JobError, JobService, iso
from agent_tools.present import (
    FINISHED,
    STATUSES,
    call_text,
    duration,
    job_arguments,
    local_time,
    ms_of,
    pretty,
    relative,
    short_json,
)
from agent_tools.tables import block, table
from promises import (
    JOB_TAG,
    InvalidArgument,
    PromiseError,
    PromiseNotFound,
    list_approvals,
)

#: On a re-run job: the id of the job it re-runs.
RERUN_TAG = "agent_tools:rerun_of"
_STATE_STATUS = {"resolved": "completed", "rejected": "failed",
                 "rejected_canceled": "cancelled", "rejected_timedout": "timed_out"}  # fmt: skip


class NotFound(JobError):
    """The thing asked for does not exist (exit status 1)."""


class UsageError(ConfigError):
    """An option the command cannot take as given (exit status 2, like argparse's)."""


def _now(service: JobService) -> int:
    return service.store.clock()


# -- options ------------------------------------------------------------------------------
# Types for the commands' arguments (argparse calls them): a bad value is a usage error,
# exit 2, with the allowed range, before anything is read.


def whole(low: int, high: int) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"{text!r:.40} is out of range: use a whole number from {low} to {high}"
            )
        return int(text)

    return parse


def seconds(low: float, high: float) -> Callable[[str], float]:
    """A number of seconds from ``low`` to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:  # NaN fails too
            raise argparse.ArgumentTypeError(
                f"{text!r:.40} is out of range: use seconds from {low:g} to {high:g}"
            )
        return value

    return parse


def an_id(text: str) -> str:
    """An id as the commands print them (jobs, approvals, schedules)."""
    if not text.strip() or len(text) > 512 or any(c < " " or c == "\x7f" for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r:.40} is not an id: ids are 1 to 512 printable characters, "
            "as agent-tools jobs list (or approvals, schedules list) prints them"
        )
    return text


def text_of(most: int) -> Callable[[str], str]:
    """Free text of at most ``most`` characters."""

    def parse(text: str) -> str:
        if len(text) > most:
            raise argparse.ArgumentTypeError(f"is {len(text)} characters long; the most is {most}")
        return text

    return parse


# -- jobs list ----------------------------------------------------------------------------


def worker_wait(view: Any, now: int) -> dict[str, Any] | None:
    """For a job ready to run whose kind no live worker has: that kind and when a worker
    with it was last seen (None: never)."""
    if view is None or view.worker is None or view.worker.alive or not view.queued(now):
        return None
    return {"kind": view.worker.kind, "last_seen": iso(view.worker.last_seen)}


def _note_worker_waits(service: JobService, jobs: list[dict[str, Any]]) -> None:
    pending = [j["job_id"] for j in jobs if j["status"] in ("running", "waiting")]
    if not pending:
        return
    now = _now(service)
    views = service.runtime.views(pending)
    for job in jobs:
        wait = worker_wait(views.get(job["job_id"]), now)
        if wait is not None:
            job["waiting_for_worker"] = wait


def list_jobs(service: JobService, status: str | None, kind: str | None, limit: int,
              cursor: str | None) -> dict[str, Any]:  # fmt: skip
    try:
        page = service.list_jobs(status, kind, limit, cursor)
    except JobError as exc:
        if cursor is not None and isinstance(exc.__cause__, InvalidArgument):  # the cursor
            raise UsageError(
                f"--cursor {cursor[:40]!r} is not one printed under an earlier page of this "
                "list with the same --status and --kind; leave it out for the first page"
            ) from exc
        raise
    _note_worker_waits(service, page["jobs"])
    return page


def _what(job: dict[str, Any], now: int) -> str:
    worker = job.get("waiting_for_worker")
    if worker:
        seen = worker.get("last_seen")
        since = f"none alive since {relative(ms_of(seen), now)}" if seen else "none has run"
        return f"a worker with kind {worker['kind']} ({since})"
    waiting = job.get("waiting_for") or {}
    if "approval" in waiting:
        question = (waiting.get("request") or {}).get("question") or "a decision"
        return f"a person: {question}"
    if "time" in waiting:
        reason = waiting.get("reason")
        return f"{reason or 'its time'} {relative(ms_of(waiting['time']), now)}"
    if waiting:
        return f"promise {waiting.get('promise')}"
    if job["status"] in FINISHED:
        error = job.get("error")
        return f"{error['type']}: {error['message']}" if error else ""
    progress = job.get("progress")
    if progress:
        fraction = progress.get("fraction")
        share = f"{fraction:.0%} " if isinstance(fraction, int | float) else ""
        return f"{share}{progress.get('message', '')}"
    return ""


def render_list(page: dict[str, Any], now: int, status: str | None = None,
                kind: str | None = None) -> str:  # fmt: skip
    """The page as a table; ``status`` and ``kind``: the filters, to name them when
    nothing matches."""
    jobs = page["jobs"]
    more = f"\n\nMore: add --cursor {page['next_cursor']}" if page.get("next_cursor") else ""
    if not jobs:
        which = " ".join(filter(None, [status, "jobs", f"of kind {kind!r}" if kind else None]))
        return f"No {which}{' on this page' if more else ''}.{more}"
    rows = []
    for job in jobs:
        created = ms_of(job.get("created_at"))
        end = ms_of(job.get("finished_at")) or now
        rows.append([
            job["job_id"], job.get("kind") or "", job["status"], relative(created, now),
            duration(end - (created or now)), _what(job, now),
        ])  # fmt: skip
    return (
        table(["JOB", "KIND", "STATUS", "STARTED", "TOOK", "WAITING FOR / PROGRESS"], rows) + more
    )


# -- jobs show ----------------------------------------------------------------------------


def show_job(service: JobService, job_id: str) -> dict[str, Any]:
    job = service.probe([job_id])[0]
    if job["status"] == "unknown":
        raise NotFound(job["error"]["message"] + "; agent-tools jobs list shows the jobs")
    try:
        promise = service.store.get(job_id)
    except PromiseNotFound as exc:  # collected between the two reads
        raise NotFound(f"no job or timer has the id {job_id!r}") from exc
    named, positional = job_arguments(promise, service.runtime.registry)
    job["arguments"] = named
    if positional:
        job["positional_arguments"] = positional
    if promise.tags.get(RERUN_TAG):
        job["rerun_of"] = promise.tags[RERUN_TAG]
    reruns = service.store.search(tags={RERUN_TAG: job_id}, limit=20).promises
    if reruns:
        job["reruns"] = [p.id for p in reruns]
    if job["status"] in FINISHED:
        job.pop("progress", None)  # the last progress of a finished job is stale
    _note_worker_waits(service, [job])
    return job


def _call_text(job: dict[str, Any], limit: int = 200) -> str:
    """``kind("B-2", 250.0, hours=3)``: positional values first, each folded."""
    positional = job.get("positional_arguments") or []
    return call_text(job.get("kind"), job.get("arguments") or {}, limit, positional)


def render_job(job: dict[str, Any], now: int) -> str:
    created = ms_of(job.get("created_at"))
    pairs = [
        ("job", job["job_id"]),
        ("status", job["status"]),
        ("call", _call_text(job)),
        ("started", f"{local_time(created)} ({relative(created, now)})"),
    ]
    if job.get("finished_at"):
        finished = ms_of(job["finished_at"])
        pairs.append(("finished", f"{local_time(finished)} ({relative(finished, now)})"))
        pairs.append(("took", duration((finished or now) - (created or now))))
    if job.get("attempts") is not None:
        pairs.append(("runs", str(job["attempts"])))
    waiting = job.get("waiting_for") or {}
    if "approval" in waiting:
        request = waiting.get("request") or {}
        deadline = ms_of(waiting.get("deadline"))
        pairs.append(("waiting for", f"a person to decide: {request.get('question', '')}"))
        pairs.append(("approval", waiting["approval"]))
        pairs.append(("decide by", f"{local_time(deadline)} ({relative(deadline, now)})"))
        pairs.append(("link", waiting.get("link") or "no pages are served for this database "
                      "(start agent-tools serve, or pass --public-url)"))  # fmt: skip
    elif waiting or job.get("waiting_for_worker"):
        pairs.append(("waiting for", _what(job, now)))
    if job.get("progress") and job["status"] not in FINISHED:
        pairs.append(("progress", _what({**job, "waiting_for": None}, now)))
    if job.get("deadline"):
        deadline = ms_of(job["deadline"])
        pairs.append(("deadline", f"{local_time(deadline)} ({relative(deadline, now)})"))
    if job.get("rerun_of"):
        pairs.append(("re-run of", job["rerun_of"]))
    if job.get("reruns"):
        pairs.append(("re-run as", ", ".join(job["reruns"])))
    if job["status"] == "completed":
        pairs.append(("result", pretty(job.get("result"))))
    if job.get("error"):
        pairs.append(("error", f"{job['error']['type']}: {job['error']['message']}"))
    return block(pairs)


# -- jobs watch ---------------------------------------------------------------------------


def _signature(job: dict[str, Any]) -> tuple[Any, ...]:
    return (job["status"], short_json(job.get("waiting_for")), short_json(job.get("progress")))


async def watch(service: JobService, job_id: str, emit: Callable[[dict[str, Any]], None],
                interval: float = 1.0) -> dict[str, Any]:  # fmt: skip
    """Emit the job's status now and at every change until it finishes; return the last."""
    last: tuple[Any, ...] | None = None
    while True:
        job = await asyncio.to_thread(show_job, service, job_id)
        if _signature(job) != last:
            last = _signature(job)
            emit(job)
        if job["status"] in FINISHED:
            return job
        try:
            await service.store.wait(job_id, timeout=interval)
        except PromiseNotFound as exc:
            raise NotFound(f"job {job_id!r} was removed while watching") from exc


def render_watch_line(job: dict[str, Any], now: int) -> str:
    stamp = time.strftime("%H:%M:%S")
    detail = _what(job, now)
    if job["status"] == "completed":
        detail = short_json(job.get("result"), 100)
    return f"{stamp}  {job['job_id']}  {job['status']}" + (f"  {detail}" if detail else "")


# -- jobs rerun ---------------------------------------------------------------------------


def rerun(service: JobService, job_id: str, new_id: str | None = None) -> dict[str, Any]:
    """Start the job again with the same arguments under a new id, linked to the old."""
    try:
        old = service.store.get(job_id)
    except PromiseNotFound as exc:
        raise NotFound(
            f"no job has the id {job_id!r}; agent-tools jobs list shows the jobs"
        ) from exc
    kind = old.tags.get(JOB_TAG)
    if kind is None:
        raise JobError(f"{job_id!r} is not a job (a timer or a step); only jobs can be re-run")
    if old.pending:
        raise JobError(
            f"job {job_id!r} has not finished; re-run it once it has (or cancel it first: "
            f"agent-tools jobs cancel {job_id})"
        )
    function = service.runtime.registry.get(kind)
    if function is None:
        raise JobError(
            f"job kind {kind!r} is not loaded here; pass --jobs MODULE (the module that "
            "defines it) or set AGENT_TOOLS_JOBS"
        )
    spec = json.loads(old.param.data or "{}")
    if new_id is None:
        base = re.sub(r"-rerun-\d+$", "", job_id)[:180]
        earlier = service.store.search(f"{base}-rerun-*", tags={JOB_TAG: "*"}, limit=1000)
        numbers = [int(m[1]) for p in earlier.promises
                   if (m := re.fullmatch(rf"{re.escape(base)}-rerun-(\d+)", p.id))]  # fmt: skip
        new_id = f"{base}-rerun-{max(numbers, default=0) + 1}"
    try:
        transition = service.runtime.start(
            function, *spec.get("args", []), id=new_id, tags={RERUN_TAG: job_id},
            **spec.get("kwargs", {}),
        )  # fmt: skip
    except Exception as exc:
        raise JobError(f"cannot re-run {job_id!r}: {exc}") from exc
    status = service.status(transition.promise)
    return {**status, "rerun_of": job_id, "created": transition.fresh}


# -- jobs cancel --------------------------------------------------------------------------


def matching(service: JobService, status: str | None, kind: str | None,
             older_than_ms: int | None) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Every unfinished job with this status / kind / age, all pages."""
    now = _now(service)
    for wanted in [status] if status else ["running", "waiting"]:
        cursor = None
        while True:
            page = service.list_jobs(wanted, kind, 200, cursor)
            for job in page["jobs"]:
                created = ms_of(job.get("created_at")) or now
                if older_than_ms is None or now - created >= older_than_ms:
                    yield job
            cursor = page["next_cursor"]
            if cursor is None:
                break


def cancel(service: JobService, ids: list[str], status: str | None, kind: str | None,
           older_than_ms: int | None, yes: bool) -> dict[str, Any]:  # fmt: skip
    if ids and (status or kind or older_than_ms is not None):
        raise UsageError("give job ids or a filter (--status, --kind, --older-than), not both")
    if not ids and not (status or kind or older_than_ms is not None):
        raise UsageError("say which jobs: job ids, or a filter (--status, --kind, --older-than)")
    if status is not None and status not in ("running", "waiting"):
        raise UsageError(f"only unfinished jobs can be cancelled: --status running or waiting, "
                       f"not {status!r}")  # fmt: skip
    if not ids:
        targets = [j["job_id"] for j in matching(service, status, kind, older_than_ms)]
        if not yes:
            return {"would_cancel": targets, "cancelled": [], "errors": {}, "dry_run": True}
    else:
        targets = ids
    cancelled, errors = [], {}
    for job_id in targets:
        try:
            service.cancel(job_id)
            cancelled.append(job_id)
        except JobError as exc:
            errors[job_id] = _not_cancelled(service, job_id, exc)
    return {"cancelled": cancelled, "errors": errors, "dry_run": False}


def _not_cancelled(service: JobService, job_id: str, refused: JobError) -> str:
    """Why ``job_id`` was not cancelled, with the command that helps (the service's
    answer names MCP tools)."""
    try:
        job = service.probe([job_id])[0]
    except JobError:
        return str(refused)
    if job["status"] == "unknown":
        return f"no job, timer or schedule has the id {job_id!r}; agent-tools jobs list shows them"
    if job["status"] in FINISHED and job.get("type", "job") == "job":
        return (
            f"job {job_id!r} is already {job['status']}; to run it again: "
            f"agent-tools jobs rerun {job_id}"
        )
    return str(refused)


def render_cancel(result: dict[str, Any]) -> str:
    if result["dry_run"]:
        targets = result["would_cancel"]
        if not targets:
            return "No unfinished job matches."
        listing = "\n".join(f"  {t}" for t in targets[:50])
        more = f"\n  … and {len(targets) - 50} more" if len(targets) > 50 else ""
        return f"{len(targets)} jobs match:\n{listing}{more}\nAdd --yes to cancel them."
    lines = [f"cancelled {job_id}" for job_id in result["cancelled"]]
    lines += [f"not cancelled {job_id}: {error}" for job_id, error in result["errors"].items()]
    return "\n".join(lines) or "Nothing to cancel."


# -- approvals ----------------------------------------------------------------------------


def waiting_approvals(service: JobService) -> dict[str, Any]:
    """What waits for a person, with the link to decide each."""
    found = approvals.pending(service.store)
    link = service.approval_link
    return {"approvals": [{**approvals.as_dict(a), "link": link(a.id) if link else None}
                          for a in found]}  # fmt: skip


def render_approvals(data: dict[str, Any], now: int) -> str:
    items = data["approvals"]
    if not items:
        return "Nothing waits for a person."
    rows = [[a["job_id"] or "", a["question"], relative(a["deadline"], now),
             a["link"] or "(no pages served: agent-tools serve, or --public-url)"]
            for a in items]  # fmt: skip
    return table(["JOB", "QUESTION", "DECIDE BY", "LINK"], rows) + (
        "\n\nDecide with: agent-tools approve JOB [--comment TEXT] (or reject), or open the link."
    )


def approval_for(service: JobService, target: str) -> str:
    """The approval a person means by ``target``: its own id, or the id of a job that
    waits on one. A job that waits on none (it was decided, or it ended) means the last
    approval it asked, if it asked any, so the person can be told what became of it."""
    try:
        view = service.runtime.view(target)
    except PromiseError:
        return target
    if view.waited is not None and view.waited.approval:
        return view.waited.id
    if view.kind is None:
        return target
    asked, _ = list_approvals(service.store, state=None, limit=1, job_id=target)
    return asked[0].id if asked else target


def decide(service: JobService, target: str, approved: bool, comment: str | None,
           by: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Decide the approval ``target`` (its id, or the id of a job waiting on one)."""
    approval_id = approval_for(service, target)
    try:
        decided = approvals.decide(
            service.store, approval_id, approved=approved, comment=comment, by=by
        )
    except approvals.ApprovalError as exc:
        if approval_id == target:
            raise JobError(str(exc)) from exc
        # Named by its job: say which question, then what became of it.
        question = approvals.get(service.store, approval_id).question
        raise JobError(f"Job {target!r} asked {question!r} ({approval_id}). {exc}") from exc
    out: dict[str, Any] = {"approval": approval_id, "approved": approved, "comment": comment}
    if by:
        out["by"] = by
    out["job_id"] = decided.job_id
    return out


# -- health -------------------------------------------------------------------------------


def count_jobs(service: JobService) -> dict[str, Any]:
    """Jobs per status and per kind, and the oldest waiting job: settled jobs counted
    by state in one grouped query on the tag index; unfinished ones (few) found through
    the index of pending promises' tags and probed for running vs waiting."""
    store = service.store
    by_status: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    for (kind, state), n in store.count_by_tag(JOB_TAG).items():
        if state in _STATE_STATUS:
            by_status[_STATE_STATUS[state]] += n
            by_kind.setdefault(kind, Counter())[_STATE_STATUS[state]] += n
    pending_ids: list[str] = []
    cursor = None
    while True:
        page = store.search(state="pending", tags={JOB_TAG: "*"}, limit=1000, cursor=cursor)
        pending_ids += [p.id for p in page.promises]
        cursor = page.cursor
        if cursor is None:
            break
    oldest: dict[str, Any] | None = None
    for start in range(0, len(pending_ids), 100):
        for job in service.probe(pending_ids[start : start + 100]):
            if job["status"] == "unknown":
                continue
            by_status[job["status"]] += 1
            by_kind.setdefault(job.get("kind") or "?", Counter())[job["status"]] += 1
            if job["status"] == "waiting" and (
                oldest is None or job["created_at"] < oldest["created_at"]
            ):
                oldest = job
    return {
        "jobs": {s: by_status.get(s, 0) for s in STATUSES},
        "kinds": {k: {s: c.get(s, 0) for s in STATUSES} for k, c in sorted(by_kind.items())},
        "oldest_waiting": None
        if oldest is None
        else {
            "job_id": oldest["job_id"],
            "kind": oldest.get("kind"),
            "created_at": oldest["created_at"],
            "waiting_for": oldest.get("waiting_for"),
        },
        "pending_ids": pending_ids,
    }


def health(service: JobService) -> dict[str, Any]:
    """Jobs per status and kind, the oldest waiting job, the ready queue, the workers,
    and the kinds that have jobs ready but no live worker to run them."""
    counts = count_jobs(service)
    runtime, now = service.runtime, _now(service)
    unserved: Counter[str] = Counter()
    pending = counts.pop("pending_ids")
    for start in range(0, len(pending), 500):
        for view in runtime.views(pending[start : start + 500]).values():
            if view.kind and view.queued(now) and view.worker is not None and not view.worker.alive:
                unserved[view.kind] += 1
    workers = runtime.workers()
    return {
        **counts,
        "ready_queue": runtime.tasks.ready_count(),
        "no_worker_for": dict(sorted(unserved.items())),
        "workers": [
            {"id": w.id, "host": w.host, "pid": w.pid, "kinds": list(w.kinds), "alive": w.alive,
             "started_at": iso(w.started_at), "seen_at": iso(w.seen_at),
             "stopped_at": iso(w.stopped_at)}
            for w in workers if w.alive
        ],
        "workers_stopped": sum(1 for w in workers if not w.alive),
        "checked_at": iso(now),
    }  # fmt: skip


def render_health(data: dict[str, Any], now: int) -> str:
    counts = "  ".join(f"{s} {n}" for s, n in data["jobs"].items())
    parts = [f"Jobs: {counts}"]
    if data["kinds"]:
        rows = [[k, *(str(c[s]) for s in STATUSES)] for k, c in data["kinds"].items()]
        parts.append(table(["KIND", *(s.upper() for s in STATUSES)], rows))
    oldest = data["oldest_waiting"]
    if oldest:
        waited = ms_of(oldest["created_at"])
        what = _what({"status": "waiting", "waiting_for": oldest["waiting_for"]}, now)
        parts.append(f"Oldest waiting job: {oldest['job_id']} ({oldest['kind']}), started "
                     f"{relative(waited, now)}, waiting for {what}")  # fmt: skip
    else:
        parts.append("No job is waiting.")
    parts.append(f"Ready to run now: {data['ready_queue']}")
    for kind, count in data["no_worker_for"].items():
        jobs = f"{count} {kind} job{'s' if count != 1 else ''}"
        parts.append(f"{jobs} wait for a worker with that kind: none is alive "
                     "(start one: agent-tools worker --jobs MODULE)")  # fmt: skip
    workers = data["workers"]
    stopped = f" ({data['workers_stopped']} stopped earlier)" if data["workers_stopped"] else ""
    if not workers:
        parts.append(f"Workers: none alive{stopped}. Jobs wait until one starts "
                     "(agent-tools serve, or agent-tools worker).")  # fmt: skip
    else:
        rows = [[w["id"], f"{w['host']}:{w['pid']}", relative(ms_of(w["started_at"]), now),
                 relative(ms_of(w["seen_at"]), now), ", ".join(w["kinds"])]
                for w in workers]  # fmt: skip
        parts.append(f"Workers alive: {len(workers)}{stopped}\n"
                     + table(["WORKER", "PROCESS", "STARTED", "SEEN", "KINDS"], rows))  # fmt: skip
    return "\n\n".join(parts)


# -- schedules ----------------------------------------------------------------------------


def _schedule(schedule: Any) -> dict[str, Any]:
    return {
        "id": schedule.id, "state": schedule.state, "cron": schedule.cron,
        "timezone": schedule.timezone, "kind": schedule.fn, "args": dict(schedule.args),
        "next_fire_at": iso(schedule.next_fire_at) if schedule.state == "active" else None,
        "created_at": iso(schedule.created_at), "last_fired_at": iso(schedule.last_fired_at),
        "last_job_id": schedule.last_job_id, "failures": schedule.failures,
        "last_error": schedule.last_error, "last_error_at": iso(schedule.last_error_at),
    }  # fmt: skip


def list_schedules(service: JobService, state: str | None, limit: int,
                   cursor: str | None) -> dict[str, Any]:  # fmt: skip
    try:
        found, next_cursor = service.schedules.list(state=state, limit=limit, cursor=cursor)  # type: ignore[arg-type]
    except PromiseError as exc:
        raise JobError(str(exc)) from exc
    return {"schedules": [_schedule(s) for s in found], "next_cursor": next_cursor}


def set_schedule(service: JobService, schedule_id: str, action: str) -> dict[str, Any]:
    """Pause, resume or cancel a schedule."""
    if service.schedules.get(schedule_id) is None:
        raise NotFound(
            f"no schedule is named {schedule_id!r}; agent-tools schedules list shows them"
        )
    change = {"pause": service.schedules.pause, "resume": service.schedules.resume,
              "cancel": service.schedules.cancel}[action]  # fmt: skip
    try:
        return _schedule(change(schedule_id))
    except PromiseError as exc:
        raise JobError(str(exc)) from exc


def render_schedules(data: dict[str, Any], now: int) -> str:
    items = data["schedules"]
    if not items:
        return "No schedules."
    rows = []
    for s in items:
        last = "never"
        if s["last_fired_at"]:
            last = f"{relative(ms_of(s['last_fired_at']), now)} ({s['last_job_id']})"
        trouble = ""
        if s["last_error"]:
            trouble = f"{s['failures']} failed, last {relative(ms_of(s['last_error_at']), now)}: "
            trouble += s["last_error"]
        next_fire = relative(ms_of(s["next_fire_at"]), now) if s["next_fire_at"] else "—"
        rows.append([s["id"], s["state"], f"{s['cron']} ({s['timezone']})", s["kind"],
                     next_fire, last, trouble])  # fmt: skip
    text = table(["SCHEDULE", "STATE", "CRON", "KIND", "NEXT", "LAST FIRED", "ERRORS"], rows)
    if data.get("next_cursor"):
        text += f"\n\nMore: add --cursor {data['next_cursor']}"
    return text


def render_schedule(s: dict[str, Any], now: int) -> str:
    next_fire = f", next {relative(ms_of(s['next_fire_at']), now)}" if s["next_fire_at"] else ""
    return f"schedule {s['id']} is {s['state']}{next_fire}"
