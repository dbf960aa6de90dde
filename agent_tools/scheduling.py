"""Timers and schedules as agents see them, beside jobs.

``schedule`` makes one of three things: a durable **timer** (no kind: it completes at
its time; ``await_result`` on it is the reminder pattern), a **job** that starts
later (a kind with ``at`` / ``delay_s``), or a cron **schedule** (a kind with
``cron``: five fields, in a time zone). Each has an id the other tools accept.
Inputs are checked here, with errors that say what is allowed; an id that is taken
(also by something cancelled) is refused rather than silently answered.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from agent_tools.errors import JobError, check_new_id, friendly
from promises import InvalidArgument, JobConflict, PromiseNotFound, Schedule

if TYPE_CHECKING:
    from agent_tools.jobs import JobService

#: The tag agent-tools puts on what it creates (timers, task records), to find them again.
KIND_TAG = "agent_tools"
#: 9999-12-31T23:59:59.999Z: the latest time the store can hold.
LATEST_MS = 253_402_300_799_999
MAX_DELAY_S = 10 * 365 * 24 * 3600.0
MAX_ZONE_LENGTH = 64


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    # Always milliseconds, so these strings sort in time order.
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: object, what: str = "at") -> int:
    """An ISO-8601 instant with a time zone, in ms since the epoch."""
    example = "use e.g. '2026-12-01T09:00:00Z' or '2026-12-01T10:00:00+01:00'"
    if not isinstance(value, str) or len(value) > 64:
        raise JobError(f"{what} must be an ISO-8601 time as a string; {example}")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise JobError(f"{what}={value!r} is not an ISO-8601 time; {example}") from exc
    if when.tzinfo is None:
        raise JobError(
            f"{what}={value!r} has no time zone; add 'Z' for UTC or an offset like '+01:00'"
        )
    ms = int(when.timestamp() * 1000)
    if not 0 <= ms <= LATEST_MS:
        raise JobError(f"{what}={value!r} is out of range; give a time between 1970 and 9999")
    return ms


def check_zone(timezone: object) -> str:
    example = "use an IANA name like 'Europe/Lisbon', 'America/New_York' or 'UTC'"
    if not isinstance(timezone, str) or not 1 <= len(timezone) <= MAX_ZONE_LENGTH:
        raise JobError(
            f"timezone must be a time zone name of at most {MAX_ZONE_LENGTH} characters; {example}"
        )
    try:
        ZoneInfo(timezone)
    except Exception as exc:  # unknown, malformed, or not a path the zone database has
        raise JobError(f"unknown time zone {timezone!r}; {example}") from exc
    return timezone


def check_cron(cron: object) -> str:
    example = "minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5' for 09:00 on weekdays"
    if not isinstance(cron, str) or len(cron.split()) != 5:
        fields = len(cron.split()) if isinstance(cron, str) else 0
        hint = " (seconds are not supported: drop the first field)" if fields == 6 else ""
        raise JobError(f"cron must have exactly five fields{hint}: {example}; got {cron!r:.80}")
    return " ".join(cron.split())


class Scheduling:
    def __init__(self, service: JobService) -> None:
        self.service = service

    # -- making ------------------------------------------------------------------------------

    def schedule(
        self,
        *,
        at: str | None,
        delay_s: float | None,
        cron: str | None,
        kind: str | None,
        args: Mapping[str, Any] | None,
        schedule_id: str | None,
        timezone: str,
    ) -> dict[str, Any]:
        given = [n for n, v in (("at", at), ("delay_s", delay_s), ("cron", cron)) if v is not None]
        if len(given) != 1:
            also = f" (got {' and '.join(given)})" if given else ""
            raise JobError(
                "give exactly one of at (an ISO-8601 time), delay_s (seconds from now) or cron "
                f"(five fields, with kind){also}"
            )
        if args is not None and kind is None:
            raise JobError(
                "args are the arguments of a job: give kind too (without kind, schedule makes a "
                "plain timer, which takes no args)"
            )
        if schedule_id is not None:
            check_new_id(schedule_id, "id")
        zone = check_zone(timezone)
        now = self.service.store.clock()
        if cron is not None:
            return self._cron(check_cron(cron), kind, args, schedule_id, zone, now)
        if at is not None:
            fire_at = parse_time(at)
            if fire_at < now:
                raise JobError(f"at={at!r} is in the past (now is {iso(now)}); give a future time")
        else:
            fire_at = now + check_delay(delay_s)
        if kind is not None:
            job = self.service.start_job(kind, args, schedule_id, start_at=fire_at)
            if not job["created"] and job["status"] != "waiting":
                raise JobError(
                    f"job {job['job_id']!r} already exists and is {job['status']}; choose a new id"
                )
            return {"id": job["job_id"], "type": "job", "next_fire_at": iso(fire_at),
                    "status": job["status"], "now": iso(now)}  # fmt: skip
        return self._timer(schedule_id or f"timer-{uuid.uuid4().hex}", fire_at, now)

    def _taken(self, item_id: str) -> None:
        """Refuse an id already used by something else (a cancelled one too)."""
        current = self.service._probe_one(item_id)
        if current["status"] != "unknown":
            raise JobError(
                f"the id {item_id!r} is already used by a {current.get('type', 'job')} that is "
                f"{current['status']}; choose a new id"
            )

    def _timer(self, timer_id: str, fire_at: int, now: int) -> dict[str, Any]:
        if self.service.schedules.get(timer_id) is not None:
            self._taken(timer_id)
        try:
            transition = self.service.runtime.timer(timer_id, fire_at, tags={KIND_TAG: "timer"})
        except JobConflict as exc:
            self._taken(timer_id)  # says what holds the id
            raise JobError(f"the id {timer_id!r} is already used; choose a new id") from exc
        except InvalidArgument as exc:
            raise JobError(friendly(exc, what="id")) from exc
        return {"id": timer_id, "type": "timer", "next_fire_at": iso(transition.promise.timeout_at),
                "status": "waiting", "now": iso(now)}  # fmt: skip

    def _cron(
        self,
        cron: str,
        kind: str | None,
        args: Mapping[str, Any] | None,
        schedule_id: str | None,
        timezone: str,
        now: int,
    ) -> dict[str, Any]:
        if kind is None:
            raise JobError("a cron schedule starts a job at every tick: give kind (and its args)")
        found = self.service.kind(kind)
        sid = schedule_id or f"schedule-{uuid.uuid4().hex}"
        try:
            self.service.store.get(sid)
            self._taken(sid)
        except PromiseNotFound:
            pass
        try:
            created = self.service.schedules.add(
                sid, cron, found.function, timezone=timezone, **dict(args or {})
            )
        except InvalidArgument as exc:
            raise JobError(friendly(exc, what=f"the schedule {sid!r}")) from exc
        if created.state != "active":
            raise JobError(
                f"schedule {sid!r} was {created.state}; a cancelled schedule's id is not reused "
                "— choose a new id"
            )
        return {"id": sid, "type": "schedule", "cron": cron, "timezone": timezone,
                "next_fire_at": iso(created.next_fire_at), "status": "waiting",
                "now": iso(now)}  # fmt: skip

    # -- reading and cancelling ------------------------------------------------------------------

    def schedule_status(self, schedule_id: str) -> dict[str, Any] | None:
        """A cron schedule as a status (``type: schedule``), or None if there is none."""
        found = self.service.schedules.get(schedule_id)
        if found is None:
            return None
        out = schedule_as_status(found)
        if found.last_job_id is not None:
            last = self.service.statuses([found.last_job_id]).get(found.last_job_id)
            if last is not None:
                out["last_run"].update({k: last[k] for k in ("status", "error") if k in last})
        return out

    def list_schedules(self, limit: int, cursor: str | None) -> dict[str, Any]:
        try:
            page, next_cursor = self.service.schedules.list(limit=limit, cursor=cursor)
        except InvalidArgument as exc:
            raise JobError(
                "cursor is not one this server handed out for these filters; pass next_cursor "
                "from the previous list_jobs answer, with the same filters"
            ) from exc
        return {"jobs": [schedule_as_status(s) for s in page], "next_cursor": next_cursor}

    def cancel_schedule(self, schedule_id: str) -> bool:
        """True if ``schedule_id`` names a schedule, now cancelled."""
        found = self.service.schedules.get(schedule_id)
        if found is None:
            return False
        if found.state == "cancelled":
            raise JobError(f"schedule {schedule_id!r} is already cancelled; schedule a new one")
        self.service.schedules.cancel(schedule_id)
        return True


def schedule_as_status(found: Schedule) -> dict[str, Any]:
    active = found.state == "active"
    out: dict[str, Any] = {
        "job_id": found.id,
        "type": "schedule",
        "kind": found.fn,
        "status": {"active": "waiting", "paused": "waiting"}.get(found.state, "cancelled"),
        "created_at": iso(found.created_at),
        "cron": found.cron,
        "timezone": found.timezone,
        "next_fire_at": iso(found.next_fire_at) if active else None,
    }
    if active:
        out["waiting_for"] = {
            "time": iso(found.next_fire_at),
            "reason": f"the next run of cron '{found.cron}' ({found.timezone})",
        }
    elif found.state == "paused":
        out["waiting_for"] = {"reason": "paused: it starts no jobs until resumed"}
    if found.last_job_id is not None:
        out["last_job_id"] = found.last_job_id
        out["last_run"] = {"job_id": found.last_job_id, "at": iso(found.last_fired_at)}
    if found.last_error is not None:
        out["last_error"] = {"message": found.last_error, "at": iso(found.last_error_at)}
        out["failures"] = found.failures
    return out


def check_delay(delay_s: object) -> int:
    if (
        isinstance(delay_s, bool)
        or not isinstance(delay_s, int | float)
        or not math.isfinite(delay_s)
        or not 0 <= delay_s <= MAX_DELAY_S
    ):
        raise JobError(
            f"delay_s must be a number of seconds from 0 to {MAX_DELAY_S:.0f} (ten years), "
            f"got {delay_s!r}"
        )
    return int(delay_s * 1000)
