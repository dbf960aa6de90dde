"""Upkeep cannot be poisoned (issue 9, item 5): a schedule is checked when it is made;
one failing schedule records its error while the others fire; sweep, reclaim, cron and
retention run apart; a failure repeated every second logs one line, not a flood."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent_tools import builtin_jobs
from promises import InvalidArgument, Runtime, Schedules, SqlStore, Worker, open_store
from tests import durable_jobs as jobs
from tests.conftest import FakeClock, raw
from tests.waiting import eventually

pytestmark = pytest.mark.anyio
MINUTE = 60_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(int(datetime(2027, 3, 1, 8, 59, tzinfo=UTC).timestamp() * 1000))


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> SqlStore:
    s = open_store(f"sqlite:///{tmp_path}/u.db", clock=clock, poll_interval=0.05)
    yield s  # type: ignore[misc]
    s.close()


def test_a_schedule_with_arguments_its_kind_refuses_is_refused_when_made(store: SqlStore) -> None:
    schedules = Schedules(Runtime(store))
    with pytest.raises(InvalidArgument, match="arguments do not fit sleep"):
        schedules.add("bad", "* * * * *", builtin_jobs.sleep, secs=1)
    assert schedules.get("bad") is None


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 0 9 * * *", "it has 6 fields; seconds are not supported: '0 0 9 * * *' is"),
        ("* * * * * *", "it has 6 fields"),
        ("0 9 * *", "it has 4 fields"),
        ("61 * * * *", "bad cron expression '61 * * * *'"),
        ("", "it has 0 fields"),
    ],
)
def test_a_cron_expression_must_have_exactly_five_valid_fields(
    store: SqlStore, cron: str, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("*", r"\*")):
        Schedules(Runtime(store)).add("s", cron, jobs.squares, 1)


def test_cancelled_schedules_stay_cancelled_and_paused_ones_skip_their_ticks(
    store: SqlStore, clock: FakeClock
) -> None:
    schedules = Schedules(Runtime(store))
    schedules.add("s", "* * * * *", jobs.squares, 1)
    schedules.pause("s")
    clock.advance(5 * MINUTE)
    assert schedules.fire_due() == 0
    resumed = schedules.resume("s")
    assert resumed.state == "active" and resumed.next_fire_at > clock()  # no burst of old ticks
    schedules.cancel("s")
    with pytest.raises(InvalidArgument, match="was cancelled; a cancelled schedule is not"):
        schedules.add("s", "* * * * *", jobs.squares, 1)
    with pytest.raises(InvalidArgument, match="cannot be active"):
        schedules.resume("s")


def test_a_failing_schedule_records_its_error_and_the_others_still_fire(
    store: SqlStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    schedules = Schedules(Runtime(store))
    schedules.add("good", "* * * * *", jobs.squares, 2)
    schedules.add("poisoned", "* * * * *", builtin_jobs.sleep, 1)
    # Its arguments stop fitting (say, the kind changed in a new release).
    raw(
        store,
        """UPDATE schedules SET args = '{"args":[],"kwargs":{"secs":1}}' WHERE id = 'poisoned'""",
    )
    with caplog.at_level(logging.WARNING, logger="promises.schedules"):
        for _ in range(10):  # ten minutes, ten ticks each
            clock.advance(MINUTE)
            assert schedules.fire_due() == 1  # the good one; the poisoned one never raises
    good, poisoned = schedules.get("good"), schedules.get("poisoned")
    assert good is not None and good.failures == 0 and good.last_job_id is not None
    assert store.get(good.last_job_id).tags["promises:job"] == "tests.squares"
    assert poisoned is not None and poisoned.failures == 10
    assert poisoned.last_error is not None and "arguments do not fit sleep" in poisoned.last_error
    assert poisoned.next_fire_at > clock()  # its tick was passed, not retried in a loop
    # Ten failures within a minute: one line in the log, with its traceback once.
    lines = [r for r in caplog.records if "poisoned" in r.getMessage()]
    assert len(lines) == 1


async def test_a_worker_keeps_sweeping_and_firing_while_a_schedule_fails(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = Runtime(store)
    schedules = Schedules(runtime)
    schedules.add("good", "* * * * *", jobs.squares, 1)
    schedules.add("poisoned", "* * * * *", builtin_jobs.sleep, 1)
    raw(store, """UPDATE schedules SET args = 'not json' WHERE id = 'poisoned'""")
    store.create("forgotten", timeout_at=clock() + 1000)  # nobody reads it again
    clock.advance(2 * MINUTE)
    worker = Worker(runtime, poll_interval=0.05, sweep_interval=0.05)
    running = asyncio.create_task(worker.run())
    try:
        # The sweep stores the forgotten promise's timeout (read beneath the store, which
        # would store it itself on a read).
        await eventually(
            lambda: (
                raw(store, "SELECT state FROM promises WHERE id = 'forgotten'")
                == [("rejected_timedout",)]
            ),
            what="the sweep ran",
        )
        await eventually(lambda: (s := schedules.get("good")) and s.last_fired_at, what="fired")
        await eventually(lambda: (s := schedules.get("poisoned")) and s.failures, what="failed")
    finally:
        worker.stop()
        await running


async def test_retention_forgets_workers_that_stopped_or_went_silent_long_ago(
    store: SqlStore, clock: FakeClock
) -> None:
    # A SIGKILLed server never marks its worker stopped: without this, every crash left
    # a row behind that every status read then scanned.
    from datetime import timedelta

    from promises.tasks import Owner

    runtime = Runtime(store)
    killed, stopped, live = (Owner(f"h:{n}:x", "h", n) for n in (101, 102, 103))
    for owner in (killed, stopped, live):
        await runtime.presence.register(owner, ["sleep"], None)
    await runtime.presence.stopped(stopped)
    clock.advance(8 * 24 * 3600 * 1000)  # past the 7 days of retention
    await store.db.awrite(lambda tx: runtime.tasks.heartbeat_tx(tx, live, 30_000, []))
    pruned = await store.db.awrite(lambda tx: runtime.presence.prune_tx(tx, timedelta(days=7)))
    assert pruned == 2
    assert [w.id for w in runtime.workers()] == [live.id]
