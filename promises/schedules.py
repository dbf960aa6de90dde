"""Cron schedules: a job started at every tick of a cron expression (``croniter``).

Firing is idempotent: the job of a tick has the id ``<schedule>@<tick ms>`` and is
created with the same idempotency key by whichever worker fires it, so there is one
job per schedule per tick, whatever the number of workers. A schedule that missed
ticks (every worker was down) fires once, for the latest missed tick, then resumes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, croniter
from sqlalchemy import select, update

from promises.errors import InvalidArgument, PromiseNotFound
from promises.schema import schedules_table
from promises.validation import check_id

if TYPE_CHECKING:
    from promises.functions import DurableFunction
    from promises.runtime import Runtime

_s = schedules_table


@dataclass(frozen=True)
class Schedule:
    id: str
    cron: str
    timezone: str
    fn: str
    args: Mapping[str, Any]
    state: str
    next_fire_at: int


def next_tick(cron: str, timezone: str, after_ms: int) -> int:
    """The first tick of ``cron`` (in ``timezone``) strictly after ``after_ms``."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArgument(
            f"unknown time zone {timezone!r}; use an IANA name like 'Europe/Lisbon' or 'UTC'"
        ) from exc
    start = datetime.fromtimestamp(after_ms / 1000, tz=zone)
    try:
        tick: datetime = croniter(cron, start).get_next(datetime)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise InvalidArgument(
            f"bad cron expression {cron!r} ({exc}); use five fields: minute hour day month "
            "weekday, e.g. '0 9 * * 1-5' for 09:00 on weekdays"
        ) from exc
    return int(tick.timestamp() * 1000)


class Schedules:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store

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
        from promises.functions import lookup

        check_id(schedule_id, "schedule id")
        function = lookup(fn, self.runtime.registry) if isinstance(fn, str) else fn
        spec = {"args": list(args), "kwargs": kwargs}
        payload = self.runtime.encode(spec, f"the arguments of schedule {schedule_id!r}")
        now = self.store.clock()
        row = {
            "id": schedule_id, "cron": cron, "timezone": timezone, "fn": function.name,
            "args": payload, "state": "active", "next_fire_at": next_tick(cron, timezone, now),
            "created_at": now,
        }  # fmt: skip
        with self.store.transaction() as conn:
            conn.execute(
                self.store.backend.insert(_s).on_conflict_do_nothing(index_elements=["id"]), row
            )
            existing = self._get(conn, schedule_id)
        if existing is None:
            raise PromiseNotFound(schedule_id)
        if (existing.cron, existing.timezone, existing.fn) != (
            cron,
            timezone,
            function.name,
        ) or existing.args != spec:
            raise InvalidArgument(
                f"schedule {schedule_id!r} already exists with another definition; "
                "cancel it first or use a new id"
            )
        return existing

    def cancel(self, schedule_id: str) -> Schedule:
        with self.store.transaction() as conn:
            conn.execute(update(_s).where(_s.c.id == schedule_id).values(state="cancelled"))
            found = self._get(conn, schedule_id)
        if found is None:
            raise InvalidArgument(f"no schedule is named {schedule_id!r}")
        return found

    def get(self, schedule_id: str) -> Schedule | None:
        with self.store.read() as conn:
            return self._get(conn, schedule_id)

    @staticmethod
    def _get(conn: Any, schedule_id: str) -> Schedule | None:
        row = conn.execute(select(_s).where(_s.c.id == schedule_id)).first()
        if row is None:
            return None
        return Schedule(
            row.id,
            row.cron,
            row.timezone,
            row.fn,
            json.loads(row.args),
            row.state,
            row.next_fire_at,
        )

    def fire_due(self) -> int:
        """Start the job of every due tick; returns how many ticks this call fired."""
        now = self.store.clock()
        with self.store.read() as conn:
            due = (
                conn.execute(
                    select(_s.c.id).where(_s.c.state == "active", _s.c.next_fire_at <= now)
                )
                .scalars()
                .all()
            )
        fired = 0
        for schedule_id in due:
            with self.store.transaction() as conn:
                schedule = self._get(conn, schedule_id)
                if schedule is None or schedule.state != "active" or schedule.next_fire_at > now:
                    continue
                tick = schedule.next_fire_at
                following = next_tick(schedule.cron, schedule.timezone, tick)
                while following <= now:  # missed ticks: fire only the latest
                    tick, following = (
                        following,
                        next_tick(schedule.cron, schedule.timezone, following),
                    )
                self.runtime.start_in(
                    conn, schedule.fn, schedule.args["args"], schedule.args["kwargs"],
                    id=f"{schedule.id}@{tick}",
                )  # fmt: skip
                moved = conn.execute(
                    update(_s)
                    .where(_s.c.id == schedule.id, _s.c.next_fire_at == schedule.next_fire_at)
                    .values(next_fire_at=following)
                ).rowcount
                fired += moved
        return fired
