"""A job's deadline never silently cuts a wait the job asked for (issue 9, item 1).

The rule: a job has no deadline unless its function gives one. Time is moved forward
with an injected clock; the worker is told to look again after each move.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from agent_tools import builtin_jobs
from promises import (
    Context,
    Runtime,
    SqlStore,
    StoredError,
    Worker,
    decide,
    durable,
    open_store,
)
from tests.conftest import FakeClock
from tests.waiting import eventually

pytestmark = pytest.mark.anyio
HOUR = 3_600_000
DAY = 24 * HOUR


@durable(name="tests.month_long_nap")
async def month_long_nap(ctx: Context) -> str:
    await ctx.sleep(timedelta(days=30))
    return "awake"


@durable(name="tests.deadline_then_sleep", timeout=timedelta(hours=1))
async def deadline_then_sleep(ctx: Context) -> str:
    await ctx.sleep(timedelta(minutes=30))  # within the deadline: fine
    await ctx.sleep(timedelta(hours=2))  # past it: refused here, not cut later
    return "unreachable"


@asynccontextmanager
async def running(store: SqlStore) -> AsyncIterator[Worker]:
    worker = Worker(Runtime(store), poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await task


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqlStore]:
    with open_store(f"sqlite:///{tmp_path}/d.db", clock=clock, poll_interval=0.05) as s:
        yield s


async def waiting_on(runtime: Runtime, job_id: str) -> str:
    def check() -> str | None:
        view = runtime.view(job_id)
        return view.waited_on

    found = await eventually(check, what=f"{job_id} waits")
    return str(found)


async def test_a_job_without_a_timeout_has_no_deadline(store: SqlStore) -> None:
    runtime = Runtime(store)
    job = runtime.start(month_long_nap, id="nap").promise
    assert job.deadline is None and runtime.view("nap").deadline is None


async def test_sleep_sleeps_its_seconds_well_past_an_hour(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = Runtime(store)
    async with running(store):
        runtime.start(builtin_jobs.sleep, 7200, id="two-hours")
        await waiting_on(runtime, "two-hours")
        clock.advance(2 * HOUR - 1)  # an hour past where 0.1 gave up
        assert store.get("two-hours").pending
        clock.advance(1)
        done = await store.wait("two-hours", timeout=30)
    assert Runtime.result(done) == {"slept_s": 7200}


async def test_ctx_sleep_of_thirty_days_wakes_after_thirty_days(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = Runtime(store)
    async with running(store):
        runtime.start(month_long_nap, id="nap")
        timer = await waiting_on(runtime, "nap")
        clock.advance(30 * DAY - 1000)
        assert store.get("nap").pending and store.get(timer).pending
        clock.advance(1000)
        done = await store.wait("nap", timeout=30)
    assert Runtime.result(done) == "awake"


async def test_an_approval_waits_its_deadline_hours_and_takes_a_late_decision(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = Runtime(store)
    async with running(store):
        runtime.start(builtin_jobs.approval, "Ship it?", None, 48, id="ask")
        approval_id = await waiting_on(runtime, "ask")
        assert store.get(approval_id).deadline == store.get(approval_id).created_at + 48 * HOUR
        clock.advance(47 * HOUR)  # 0.1 timed the job out 46 hours ago
        assert runtime.view("ask").promise.pending
        decided = await asyncio.to_thread(decide, store, approval_id, approved=True, by="test")
        assert decided.state == "approved"
        done = await store.wait("ask", timeout=30)
    assert Runtime.result(done) == {
        "decided": True,
        "approved": True,
        "comment": None,
        "by": "test",
    }


async def test_an_approval_past_its_deadline_completes_undecided(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = Runtime(store)
    async with running(store):
        runtime.start(builtin_jobs.approval, "Ship it?", None, 2, id="ask")
        await waiting_on(runtime, "ask")
        clock.advance(2 * HOUR)
        done = await store.wait("ask", timeout=30)
    assert Runtime.result(done)["decided"] is False


async def test_a_wait_past_an_explicit_deadline_is_an_error_at_that_wait(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = Runtime(store)
    async with running(store):
        runtime.start(deadline_then_sleep, id="boxed")
        await waiting_on(runtime, "boxed")
        clock.advance(30 * 60_000)  # the first sleep ends; the second is asked for
        done = await store.wait("boxed", timeout=30)
    assert done.state == "rejected"  # failed at the wait, not timed out later
    with pytest.raises(StoredError) as failed:
        Runtime.result(done)
    assert failed.value.type == "WaitPastDeadline"
    assert "Give the job a longer timeout (or none)" in failed.value.message
