"""Cron schedules: a job started at every tick of a cron expression (``croniter``).

Firing is idempotent: the job of a tick has the id ``<schedule>@<tick ms>`` and is
created with the same idempotency key by whichever worker fires it, so there is one
job per schedule per tick, whatever the number of workers. A schedule that missed
ticks (every worker was down) fires once, for the latest missed tick, then resumes.

A schedule is checked when it is made: exactly five cron fields, a known time zone,
and arguments its kind accepts. One failing schedule never stops the others: its error
is recorded on it (``last_error``, ``failures``), the tick is passed, and the next
tick tries again. A schedule can be paused and resumed; a cancelled one is gone for
good (its id cannot be reused while it is kept).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, croniter

from promises.database import Tx
from promises.errors import InvalidArgument, PromiseError
from promises.functions import lookup, validated_arguments
from promises.logs import Throttled
from promises.records import NO_DEADLINE
from promises.validation import check_job_id, check_text

if TYPE_CHECKING:
    from promises.functions import DurableFunction
    from promises.runtime import Runtime

log = logging.getLogger("promises.schedules")
ScheduleState = Literal["active", "paused", "cancelled"]
SCHEDULE_STATES: tuple[ScheduleState, ...] = ("active", "paused", "cancelled")
_MAX_TIMEZONE = 64


@dataclass(frozen=True)
class Schedule:
    id: str
    cron: str
    timezone: str
    fn: str
    args: Mapping[str, Any]
    state: ScheduleState
    next_fire_at: int
    created_at: int
    last_fired_at: int | None
    last_job_id: str | None
    last_error: str | None
    last_error_at: int | None
    failures: int

    @classmethod
    def from_row(cls, row: Any) -> Schedule:
        (id, cron, timezone, fn, args, state, next_fire_at, created_at, last_fired_at,
         last_job_id, last_error, last_error_at, failures) = row  # fmt: skip
        try:
            spec = json.loads(args)
        except ValueError:
            spec = None
        if not isinstance(spec, dict) or not {"args", "kwargs"} <= spec.keys():
            spec = {"unreadable": args[:200]}  # reported when it fires, never raised here
        return cls(
            id, cron, timezone, fn, spec, state, next_fire_at, created_at,
            last_fired_at, last_job_id, last_error, last_error_at, failures,
        )  # fmt: skip


def check_timezone(timezone: object) -> ZoneInfo:
    if not isinstance(timezone, str) or not 1 <= len(timezone) <= _MAX_TIMEZONE:
        raise InvalidArgument(
            f"time zone must be an IANA name like 'Europe/Lisbon' or 'UTC', got {timezone!r:.40}"
        )
    check_text(timezone, "time zone")
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArgument(
            f"unknown time zone {timezone!r}; use an IANA name like 'Europe/Lisbon' or 'UTC'"
        ) from exc


def check_cron(cron: object) -> str:
    """Five fields, as cron has them. Six (seconds first, the Quartz habit) would be read
    differently by different tools, so they are refused, not guessed at."""
    bad = (
        f"bad cron expression {cron!r:.80}; use five fields: minute hour day-of-month month "
        "day-of-week, e.g. '0 9 * * 1-5' for 09:00 on weekdays"
    )
    if not isinstance(cron, str):
        raise InvalidArgument(bad)
    check_text(cron, "cron expression")
    fields = cron.split()
    if len(fields) != 5:
        raise InvalidArgument(
            f"{bad} (it has {len(fields)} field{'s' if len(fields) != 1 else ''}; seconds are "
            "not supported: '0 0 9 * * *' is written '0 9 * * *')"
        )
    try:
        croniter(cron)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        if "out of range" in str(exc):
            raise InvalidArgument(
                f"{bad} (a field is out of range: minute 0-59, hour 0-23, day-of-month 1-31, "
                "month 1-12, day-of-week 0-6)"
            ) from exc
        raise InvalidArgument(bad) from exc
    return cron


def next_tick(cron: str, timezone: str, after_ms: int) -> int:
    """The first tick of ``cron`` (in ``timezone``) strictly after ``after_ms``."""
    zone = check_timezone(timezone)
    start = datetime.fromtimestamp(after_ms / 1000, tz=zone)
    try:
        tick: datetime = croniter(check_cron(cron), start).get_next(datetime)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise InvalidArgument(
            f"the cron expression {cron!r:.80} never fires: no date matches it (such as the "
            "31st of February)"
        ) from exc
    return int(tick.timestamp() * 1000)


class Schedules:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.sql = runtime.store.sql
        self._log = Throttled(log)

    def add(
        self,
        schedule_id: str,
        cron: str,
        fn: DurableFunction | str,
        *args: Any,
        timezone: str = "UTC",
        **kwargs: Any,
    ) -> Schedule:
        """Create a schedule (the same id and definition again returns it)."""
        check_job_id(schedule_id, "schedule id")
        function = lookup(fn, self.runtime.registry) if isinstance(fn, str) else fn
        check_cron(cron)
        validated_arguments(function, args, kwargs)
        spec = {"args": list(args), "kwargs": kwargs}
        payload = self.runtime.encode(spec, f"the arguments of schedule {schedule_id!r}")
        now = self.store.clock()
        row = {
            "id": schedule_id, "cron": cron, "timezone": timezone, "fn": function.name,
            "args": payload, "next_fire_at": next_tick(cron, timezone, now), "now": now,
        }  # fmt: skip

        def unit(tx: Tx) -> Schedule:
            tx.execute(self.sql.insert_schedule, row)
            tx.ready(function.name)  # a worker's next cron tick may be sooner now
            return Schedule.from_row(tx.one(self.sql.schedule, {"id": schedule_id}))

        existing = self.store.db.write(unit)
        if existing.state == "cancelled":
            raise InvalidArgument(
                f"schedule {schedule_id!r} was cancelled; a cancelled schedule is not "
                "restarted. Use a new id for a new schedule"
            )
        if (existing.cron, existing.timezone, existing.fn) != (
            cron,
            timezone,
            function.name,
        ) or existing.args != json.loads(payload):
            raise InvalidArgument(
                f"schedule {schedule_id!r} already exists with another definition; "
                "cancel it first or use a new id"
            )
        return existing

    def _set_state(self, schedule_id: str, state: ScheduleState) -> Schedule:
        current = self.get(schedule_id)
        if current is None:
            raise InvalidArgument(f"no schedule is named {schedule_id!r}")
        if current.state == "cancelled":
            if state == "cancelled":
                return current
            raise InvalidArgument(f"schedule {schedule_id!r} was cancelled; it cannot be {state}")
        next_fire_at = current.next_fire_at
        if state == "active" and current.state != "active":
            # Resuming fires at the next tick from now, not the ticks missed while paused.
            next_fire_at = next_tick(current.cron, current.timezone, self.store.clock())
        params = {"id": schedule_id, "state": state, "next_fire_at": next_fire_at}

        def unit(tx: Tx) -> Schedule:
            tx.execute(self.sql.set_schedule_state, params)
            tx.ready(current.fn)
            return Schedule.from_row(tx.one(self.sql.schedule, {"id": schedule_id}))

        return self.store.db.write(unit)

    def cancel(self, schedule_id: str) -> Schedule:
        return self._set_state(schedule_id, "cancelled")

    def pause(self, schedule_id: str) -> Schedule:
        return self._set_state(schedule_id, "paused")

    def resume(self, schedule_id: str) -> Schedule:
        return self._set_state(schedule_id, "active")

    def get(self, schedule_id: str) -> Schedule | None:
        row = self.store.db.read(lambda tx: tx.one(self.sql.schedule, {"id": schedule_id}))
        return None if row is None else Schedule.from_row(row)

    def list(
        self, *, state: ScheduleState | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Schedule], str | None]:
        """Schedules by id, ``limit`` at a time; pass the returned cursor for more."""
        if state is not None and state not in SCHEDULE_STATES:
            raise InvalidArgument(
                f"state must be one of {', '.join(SCHEDULE_STATES)}, got {state!r:.40}"
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidArgument(f"limit must be an integer from 1 to 1000, got {limit!r:.40}")
        after = cursor or ""
        if not isinstance(after, str):
            raise InvalidArgument("cursor must be the next_cursor of a previous page")
        statement = self.sql.schedules_page if state is None else self.sql.schedules_in_state
        params: dict[str, Any] = {"after": after, "limit": limit + 1, "state": state}
        rows = self.store.db.read(lambda tx: tx.all(statement, params))
        found = [Schedule.from_row(r) for r in rows[:limit]]
        return found, (found[-1].id if len(rows) > limit else None)

    # -- firing ------------------------------------------------------------------------

    def fire_due(self, kinds: Collection[str] | None = None) -> int:
        """Start the job of every due tick of schedules of ``kinds`` (default: every kind
        the runtime has: a worker fires the schedules it could run). Returns how many
        ticks this call fired. A schedule that fails records its error and passes its
        tick; the others fire."""
        now = self.store.clock()
        params = {"now": now, "kinds": self._kinds(kinds)}
        due = self.store.db.read(lambda tx: tx.all(self.sql.due_schedules, params))
        fired = 0
        for (schedule_id,) in due:
            try:
                fired += self.store.db.write(
                    functools.partial(self._fire_tx, id=schedule_id, now=now)
                )
            except PromiseError as exc:
                self._fail(schedule_id, now, exc)
        return fired

    async def afire_due(self, kinds: Collection[str] | None = None) -> int:
        now = self.store.clock()
        params = {"now": now, "kinds": self._kinds(kinds)}
        due = await self.store.db.aread(lambda tx: tx.all(self.sql.due_schedules, params))
        fired = 0
        for (schedule_id,) in due:
            try:
                fired += await self.store.db.awrite(
                    functools.partial(self._fire_tx, id=schedule_id, now=now)
                )
            except PromiseError as exc:
                await self.store.db.awrite(
                    functools.partial(self._fail_tx, id=schedule_id, now=now, exc=exc)
                )
        return fired

    def _kinds(self, kinds: Collection[str] | None) -> Any:
        return self.sql.ids(sorted(self.runtime.registry if kinds is None else kinds))

    def _fire_tx(self, tx: Tx, *, id: str, now: int) -> int:
        row = tx.one(self.sql.schedule_for_update, {"id": id})
        if row is None:
            return 0
        schedule = Schedule.from_row(row)
        if schedule.state != "active" or schedule.next_fire_at > now:
            return 0
        tick = schedule.next_fire_at
        following = next_tick(schedule.cron, schedule.timezone, tick)
        while following <= now:  # missed ticks: fire only the latest
            tick, following = following, next_tick(schedule.cron, schedule.timezone, following)
        job_id = f"{schedule.id}@{tick}"
        if "unreadable" in schedule.args:
            raise InvalidArgument(
                f"schedule {schedule.id!r} has stored arguments that cannot be read "
                f"({schedule.args['unreadable']!r}); cancel it and schedule it again"
            )
        request = self.runtime.prepare(
            schedule.fn, schedule.args["args"], schedule.args["kwargs"], id=job_id, chosen=False
        )
        self.runtime.start_tx(tx, request)
        params = {"id": schedule.id, "following": following, "tick": tick, "job_id": job_id,
                  "next_fire_at": schedule.next_fire_at}  # fmt: skip
        return tx.execute(self.sql.schedule_fired, params)

    def _fail(self, schedule_id: str, now: int, exc: PromiseError) -> None:
        try:
            self.store.db.write(functools.partial(self._fail_tx, id=schedule_id, now=now, exc=exc))
        except PromiseError as again:
            self._log.warning(schedule_id, "schedule %s: cannot record its failure (%s)",
                              schedule_id, again)  # fmt: skip

    def _fail_tx(self, tx: Tx, *, id: str, now: int, exc: PromiseError) -> None:
        schedule_id = id
        row = tx.one(self.sql.schedule, {"id": schedule_id})
        if row is None:
            return
        schedule = Schedule.from_row(row)
        try:
            following = next_tick(schedule.cron, schedule.timezone, max(now, schedule.next_fire_at))
        except InvalidArgument:
            following = NO_DEADLINE  # it can never fire again; its error says why
        params = {"id": schedule_id, "following": following, "error": str(exc)[:2000],
                  "now": now, "next_fire_at": schedule.next_fire_at}  # fmt: skip
        tx.execute(self.sql.schedule_failed, params)
        self._log.warning(schedule_id, "schedule %s failed at its tick: %s", schedule_id, exc)
