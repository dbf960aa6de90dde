"""The durable-function runtime in one process: steps, ids, waits, retries, timeouts,
cancellation, errors and replay checks, with a real worker on a real store."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from promises import (
    Context,
    InvalidArgument,
    JobConflict,
    OutcomeUnknown,
    Runtime,
    SqlStore,
    UnknownJob,
    Value,
    durable,
    open_store,
)
from promises.codec import StoredError
from promises.functions import validated_arguments
from promises.records import TIMER_TAG
from promises.worker import Worker
from tests import durable_jobs as jobs
from tests.conftest import FakeClock
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


async def looked_again(worker: Worker) -> None:
    """Until the worker has looked for work again, after everything done before this."""
    seen = worker.passes
    worker.wake()
    await eventually(lambda: worker.passes > seen)
    worker.wake()  # that pass may have begun before the call: one more, begun after it
    await eventually(lambda: worker.passes > seen + 1)


@asynccontextmanager
async def worker_for(store: SqlStore, **options: object) -> AsyncIterator[Worker]:
    options = {"poll_interval": 0.05, **options}
    worker = Worker(Runtime(store), **options)  # type: ignore[arg-type]
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, object]]]:
    path = tmp_path / "steps.log"
    monkeypatch.setenv("DURABLE_TEST_LOG", str(path))
    jobs.Flaky.calls = 0
    return lambda: (
        [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    )


@pytest.fixture
def real_store(store_url: str) -> AsyncIterator[SqlStore]:
    with open_store(store_url, poll_interval=0.05) as s:
        yield s


async def finish(store: SqlStore, job_id: str, timeout: float = 10) -> object:
    job = await store.wait(job_id, timeout=timeout)
    assert not job.pending, f"{job_id} still pending"
    return Runtime.result(job)


async def test_each_step_runs_once_and_the_job_resolves_with_their_results(
    real_store: SqlStore, log: Callable[[], list[dict[str, object]]]
) -> None:
    async with worker_for(real_store):
        assert Runtime(real_store).start(jobs.squares, 4, id="sq").fresh
        assert await finish(real_store, "sq") == [0, 1, 4, 9]
    assert sorted(e["step"] for e in log()) == ["sq.0", "sq.1", "sq.2", "sq.3"]  # type: ignore[type-var]


async def test_step_ids_are_deterministic_for_sequential_concurrent_and_nested_steps(
    real_store: SqlStore, log: Callable[[], list[dict[str, object]]]
) -> None:
    async with worker_for(real_store):
        Runtime(real_store).start(jobs.shape, id="shape")
        assert await finish(real_store, "shape") == {"first": 1, "pair": [4, 9], "nested": 16 + 25}
    children = {
        p.id: p.param.headers["promises:step"] for p in real_store.search("shape.*").promises
    }
    assert children == {
        "shape.0": "tests.durable_jobs:square",
        "shape.1": "tests.durable_jobs:square",
        "shape.2": "tests.durable_jobs:async_square",
        "shape.3": "tests.inner",
        "shape.3.0": "tests.durable_jobs:square",
        "shape.3.1": "tests.durable_jobs:square",
    }
    assert {e["step"] for e in log()} == {"shape.0", "shape.1", "shape.2", "shape.3.0", "shape.3.1"}


async def test_starting_the_same_job_id_twice_with_the_same_args_runs_it_once(
    real_store: SqlStore, log: Callable[[], list[dict[str, object]]]
) -> None:
    runtime = Runtime(real_store)
    assert runtime.start(jobs.squares, 2, id="once").fresh
    assert runtime.start(jobs.squares, 2, id="once").deduplicated
    with pytest.raises(JobConflict, match="already exists with other arguments"):
        runtime.start(jobs.squares, 3, id="once")
    async with worker_for(real_store):
        assert await finish(real_store, "once") == [0, 1]
    assert len(log()) == 2


async def test_jobs_started_without_an_id_get_new_ids_whoever_seeds_random(
    store: SqlStore,
) -> None:
    """Job code (or a library) seeding the shared ``random`` must not make a generated
    id repeat: the same start would then return the old job instead of a new one."""
    runtime = Runtime(store)
    started = []
    state = random.getstate()
    try:
        for _ in range(2):
            random.seed(7)
            started.append(runtime.start(jobs.squares, 3))
    finally:
        random.setstate(state)  # the other tests' randomness as it was
    assert all(t.fresh for t in started)
    assert started[0].promise.id != started[1].promise.id


async def test_a_pydantic_step_result_comes_back_as_the_model_on_replay(
    real_store: SqlStore,
) -> None:
    async with worker_for(real_store):
        Runtime(real_store).start(jobs.report, "Porto", id="rep")
        assert await finish(real_store, "rep") == {
            "is_model": True,
            "report": {"city": "Porto", "rows": 3},
        }


async def test_a_sleeping_job_gives_its_slot_back_and_wakes_after_its_time(
    real_store: SqlStore,
) -> None:
    async with worker_for(real_store, concurrency=1):
        runtime = Runtime(real_store)
        runtime.start(jobs.sleeper, 600, id="sleepy")
        await eventually(lambda: (t := runtime.tasks.get("sleepy")) and t.waiting_on, what="sleeps")
        runtime.start(jobs.squares, 1, id="quick")
        # With one slot, the quick job runs while the other sleeps: the sleeper gave its
        # slot back (it waits on its timer, holding nothing).
        assert await finish(real_store, "quick") == [0]
        task = runtime.tasks.get("sleepy")
        assert real_store.get("sleepy").pending and task is not None
        assert task.waiting_on == "sleepy.1" and task.state != "claimed"
        # Its time comes (the timer resolves): it wakes and finishes.
        real_store.resolve("sleepy.1")
        result = await finish(real_store, "sleepy")
    assert result["after"] >= result["before"]  # type: ignore[index]


async def test_a_job_going_to_sleep_wakes_no_worker_that_looks_sooner_anyway(
    real_store: SqlStore,
) -> None:
    # The worker looks every 60 s: a job of this process sleeping for longer is no reason
    # to wake it (each wake-up costs a read); one sleeping for less must wake it.
    async with worker_for(real_store, poll_interval=60) as worker:
        runtime = worker.runtime  # its jobs go straight to the worker, as in a server
        await looked_again(worker)
        seen = worker.passes
        for n in range(5):
            runtime.start(jobs.sleeper, 600, id=f"long-{n}")
        await eventually(
            lambda: all((t := runtime.tasks.get(f"long-{n}")) and t.waiting_on for n in range(5)),
            what="all sleep",
        )
        assert worker.passes == seen
        # Due before the worker's next look: it wakes, and runs the job on time.
        runtime.start(jobs.sleeper, 0.2, id="short")
        result = await finish(real_store, "short", timeout=10)
        assert worker.passes > seen
    assert result["after"] >= result["before"]  # type: ignore[index]


@durable(name="tests.naps")
async def naps(ctx: Context) -> None:
    await ctx.sleep(600)


async def test_a_job_going_to_sleep_with_no_step_to_record_asks_for_one_statement(
    real_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL such a unit, alone, commits in one round trip (tests/test_writer.py),
    # and in a batch its declared first statement goes ahead with the others'; with
    # steps to record first, or waiting on a promise, it must not ask.
    asked: list[tuple[bool, bool, bool]] = []
    real = real_store.db.awrite_future

    def noted(fn: Any, *, durable: bool = True, one_statement: bool = False,
              first: Any = None) -> Any:  # fmt: skip
        asked.append((durable, one_statement, first is not None))
        return real(fn, durable=durable, one_statement=one_statement, first=first)

    monkeypatch.setattr(real_store.db, "awrite_future", noted)
    async with worker_for(real_store) as worker:
        started = await worker.runtime.astart(naps)
        await eventually(lambda: (t := worker.runtime.tasks.get(started.promise.id)) and t.waiting_on,
                         what="the job sleeps")  # fmt: skip
    assert (False, True, True) in asked  # the sleep: not flushed, one declared statement


async def test_a_start_whose_outcome_is_unknown_names_the_id_to_start_it_again_by(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The connection broke as the start committed: it may be there or not. Its id was
    # made up here, so the error must give it: with it a second start is safe.
    runtime = Runtime(store)
    real = store.db.awrite
    written: list[str] = []

    async def committed_then_lost(fn: Any, **options: Any) -> Any:
        await real(fn, **options)
        written.append("start")
        raise OutcomeUnknown("the connection broke while it committed")

    monkeypatch.setattr(store.db, "awrite", committed_then_lost)
    with pytest.raises(OutcomeUnknown) as refused:
        await runtime.astart(jobs.squares, 3)
    monkeypatch.setattr(store.db, "awrite", real)
    job_id = str(refused.value).split("'")[1]
    assert f"start it again with the id {job_id!r}" in str(refused.value)
    again = await runtime.astart(jobs.squares, 3, id=job_id)
    assert written == ["start"] and not again.fresh and again.promise.id == job_id


async def test_a_quick_job_started_and_awaited_costs_one_flush(real_store: SqlStore) -> None:
    # Nobody hears of the start before the job's end: the commit of the end flushes
    # both, and the answer (the result) comes after it.
    async with worker_for(real_store) as worker:
        runtime = worker.runtime
        await runtime.astart_and_wait(jobs.squares, 2, wait_s=30)  # the worker is warm
        before = real_store.db.flushes
        _, job = await runtime.astart_and_wait(jobs.squares, 3, wait_s=30)
        assert job.state == "resolved" and Runtime.result(job) == [0, 1, 4]
        assert real_store.db.flushes == before + 1


@pytest.fixture
def wal_syncs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When the store synced a SQLite log (os.fsync of a ``-wal`` file: on SQLite the
    writer commits without a sync and syncs the log after each durable batch)."""
    synced: list[float] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("-wal"):
            synced.append(time.monotonic())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


async def test_a_job_still_running_when_the_wait_ends_is_flushed_before_the_answer(
    real_store: SqlStore, wal_syncs: list[float]
) -> None:
    # Its start and its sleep were written without a flush: the answer ("running")
    # must not come before a flush, though nothing new is written then.
    async with worker_for(real_store) as worker:
        runtime = worker.runtime
        await looked_again(worker)  # registered (a flushed write) and looking
        before = real_store.db.flushes
        began = time.monotonic()
        started, job = await runtime.astart_and_wait(jobs.sleeper, 600, wait_s=0.2)
        assert job.pending and started.fresh
        assert flushed_since(real_store, before, began, wal_syncs)


@asynccontextmanager
async def started_and_awaited(store: SqlStore, job_id: str) -> AsyncIterator[Runtime]:
    """A job started by a caller still waiting for it (its start not flushed yet)."""
    async with worker_for(store) as worker:
        runtime = worker.runtime
        first = asyncio.create_task(
            runtime.astart_and_wait(jobs.sleeper, 600, id=job_id, wait_s=60)
        )
        await eventually(lambda: runtime.tasks.get(job_id) is not None, what="started")
        try:
            yield runtime
        finally:
            first.cancel()


def flushed_since(store: SqlStore, flushes: int, began: float, wal_syncs: list[float]) -> bool:
    """A flushed commit since then (on SQLite: the writer synced the log)."""
    synced = store.backend.name != "sqlite" or any(t > began for t in wal_syncs)
    return store.db.flushes > flushes and synced


async def test_a_second_start_of_a_job_not_yet_flushed_is_answered_after_a_flush(
    real_store: SqlStore, wal_syncs: list[float]
) -> None:
    # A second caller starts the same job and is told it runs: not before a flush.
    async with started_and_awaited(real_store, "twice") as runtime:
        before, began = real_store.db.flushes, time.monotonic()
        again = await runtime.astart(jobs.sleeper, 600, id="twice")
        assert not again.fresh and again.promise.pending
        assert flushed_since(real_store, before, began, wal_syncs)


async def test_a_conflicting_start_of_a_job_not_yet_flushed_is_refused_after_a_flush(
    real_store: SqlStore, wal_syncs: list[float]
) -> None:
    # The refusal tells of the job there ("it is pending"): not before a flush.
    async with started_and_awaited(real_store, "taken") as runtime:
        before, began = real_store.db.flushes, time.monotonic()
        with pytest.raises(JobConflict, match="already exists"):
            await runtime.astart(jobs.sleeper, 5, id="taken")
        assert flushed_since(real_store, before, began, wal_syncs)


def test_a_durable_write_on_sqlite_is_synced_before_others_can_read_it(tmp_path: Path) -> None:
    # At synchronous=FULL SQLite syncs a commit before other connections can see it; a
    # commit at NORMAL synced afterwards would let a reader report a result a power
    # loss then takes back. The writer's setting, as each kind of batch sees it:
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:

        def setting(tx: Any) -> int:
            return int(tx.scalar("PRAGMA synchronous"))

        assert store.db.write(setting) == 2  # FULL
        assert store.db.write(setting, durable=False) == 1  # NORMAL: no sync needed
        assert store.db.write(setting) == 2


def test_a_store_opened_through_a_symlink_syncs_the_log_of_the_real_file(
    tmp_path: Path, wal_syncs: list[float]
) -> None:
    (tmp_path / "real").mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(tmp_path / "real" / "store.db")
    with open_store(f"sqlite:///{link}") as store:
        store.create("p", timeout_at=store.clock() + 60_000)
        began = time.monotonic()
        store.db.flush()
    assert [t for t in wal_syncs if t > began]


async def test_a_job_tagged_as_a_timer_that_times_out_is_flushed_before_the_answer(
    store: SqlStore, clock: FakeClock
) -> None:
    # A timer resolves at its deadline; a job may carry the timer tag. Its timeout is
    # stored by whoever reads it past the deadline, here a start written without a
    # flush: "resolved" must not skip the flush then.
    runtime = Runtime(store)
    tags = {TIMER_TAG: "true"}
    runtime.start(jobs.timeboxed, id="tb", tags=tags)  # no worker: it never runs
    clock.advance(2_000)  # past its 1 s deadline
    before = store.db.flushes
    _, job = await runtime.astart_and_wait(jobs.timeboxed, id="tb", tags=tags, wait_s=0)
    assert job.state == "resolved"
    assert store.db.flushes > before


async def test_sleep_until_needs_an_aware_time_and_wakes_then(real_store: SqlStore) -> None:
    when = datetime.fromtimestamp(time.time() + 0.3, tz=UTC)
    async with worker_for(real_store):
        Runtime(real_store).start(jobs.sleep_until, when.isoformat(), id="until")
        assert await finish(real_store, "until") >= int(when.timestamp() * 1000)  # type: ignore[operator]
        Runtime(real_store).start(jobs.sleep_until, "2030-01-01T09:00:00", id="naive")
        with pytest.raises(StoredError, match="aware datetime"):
            await finish(real_store, "naive")


async def test_an_outside_promise_resumes_the_job_with_its_value(real_store: SqlStore) -> None:
    async with worker_for(real_store):
        Runtime(real_store).start(jobs.approval, 250, id="refund")
        await eventually(lambda: real_store.search("refund.*", state="pending").promises != [])
        decision = real_store.get("refund.0")
        assert json.loads(decision.param.data or "") == {"amount": 250}
        real_store.resolve("refund.0", value=Value('{"approved": true}'))
        assert await finish(real_store, "refund") == {
            "id": "refund.0",
            "decided": True,
            "answer": {"approved": True},
        }


async def test_an_outside_promise_past_its_deadline_raises_into_the_job(
    real_store: SqlStore,
) -> None:
    async with worker_for(real_store):
        Runtime(real_store).start(jobs.approval, 10, 0.3, id="late")
        result = await finish(real_store, "late")
    assert result["decided"] is False and "not settled by its deadline" in result["error"]  # type: ignore[index]


async def test_progress_is_recorded_for_the_job(real_store: SqlStore) -> None:
    @durable(name="tests.progressing")
    async def progressing(ctx: object) -> None:
        ctx.progress("half way", 0.5)  # type: ignore[attr-defined]
        await ctx.sleep(0.2)  # type: ignore[attr-defined]

    async with worker_for(real_store):
        Runtime(real_store).start(progressing, id="prog")
        await finish(real_store, "prog")
    task = Runtime(real_store).tasks.get("prog")
    assert task is not None and task.progress is not None and task.progress.message == "half way"


# -- retries, with an injected clock ------------------------------------------------------


async def test_retries_follow_the_policy_then_succeed(
    tmp_path: Path, log: Callable[[], list[dict[str, object]]]
) -> None:
    clock = FakeClock()
    with open_store(f"sqlite:///{tmp_path}/r.db", clock=clock, poll_interval=0.05) as store:
        runtime = Runtime(store)
        async with worker_for(store) as worker:
            runtime.start(jobs.flaky_job, 2, id="flaky")
            await eventually(lambda: len(log()) == 1)
            await eventually(
                lambda: (t := runtime.tasks.get("flaky")) is not None and t.state == "ready"
            )
            assert runtime.tasks.get("flaky").ready_at == clock() + 10_000  # type: ignore[union-attr]
            clock.advance(9_999)
            await looked_again(worker)
            assert len(log()) == 1  # not before its time
            clock.advance(1)
            worker.wake()
            await eventually(lambda: len(log()) == 2)
            await eventually(
                lambda: (t := runtime.tasks.get("flaky")) is not None and t.state == "ready"
            )
            clock.advance(10_000)
            worker.wake()
            assert await finish(store, "flaky") == "ok"
        assert [e["attempt"] for e in log()] == [1, 2, 3]


async def test_retries_stop_at_max_attempts_and_fail_the_job_with_the_error(
    tmp_path: Path, log: Callable[[], list[dict[str, object]]]
) -> None:
    clock = FakeClock()
    with open_store(f"sqlite:///{tmp_path}/r.db", clock=clock, poll_interval=0.05) as store:
        async with worker_for(store) as worker:
            Runtime(store).start(jobs.flaky_job, 99, id="doomed")
            tasks = Runtime(store).tasks
            for attempt in range(1, 4):
                await eventually(lambda a=attempt: len(log()) == a)  # type: ignore[misc]
                await eventually(
                    lambda: (t := tasks.get("doomed")) is not None and t.state == "ready"
                )
                clock.advance(10_000)
                worker.wake()
            with pytest.raises(StoredError) as failed:
                await finish(store, "doomed")
        assert (failed.value.type, failed.value.message) == ("ConnectionError", "failure 4")
        assert store.get("doomed.0").state == "rejected"


@pytest.mark.parametrize("error", ["Permanent", "KeyError"])
async def test_non_retryable_errors_fail_at_once(
    real_store: SqlStore, log: Callable[[], list[dict[str, object]]], error: str
) -> None:
    async with worker_for(real_store):
        Runtime(real_store).start(jobs.flaky_job, 5, error, id="perm")
        with pytest.raises(StoredError, match="failure 1"):
            await finish(real_store, "perm")
    assert len(log()) == 1


async def test_a_failed_step_is_stored_so_a_job_that_catches_it_replays_the_same_way(
    real_store: SqlStore, log: Callable[[], list[dict[str, object]]]
) -> None:
    async with worker_for(real_store):
        Runtime(real_store).start(jobs.flaky_caught, id="caught")
        assert await finish(real_store, "caught") == "caught: failure 1"
    stored = real_store.get("caught.0")
    assert (
        stored.state == "rejected"
        and json.loads(stored.value.data or "")["type"] == "ConnectionError"
    )


async def test_a_job_error_round_trips_through_the_store(store_url: str) -> None:
    with open_store(store_url, poll_interval=0.05) as store:
        async with worker_for(store):
            Runtime(store).start(jobs.fails, "the sky fell", id="err")
            await store.wait("err", timeout=10)
    with open_store(store_url) as reopened, pytest.raises(StoredError) as failed:
        Runtime.result(reopened.get("err"))
    assert (failed.value.type, failed.value.message) == ("ValueError", "the sky fell")


async def test_a_job_timeout_rejects_its_promise_and_stops_it(
    real_store: SqlStore, log: Callable[[], list[dict[str, object]]]
) -> None:
    async with worker_for(real_store) as worker:
        Runtime(real_store).start(jobs.timeboxed_work, 1000, 0.05, id="boxed")
        job = await real_store.wait("boxed", timeout=10)
        assert job.state == "rejected_timedout"
        # The run was stopped at the deadline: no step runs after it, and the task is done.
        await eventually(lambda: "boxed" not in worker.running)
        ran = len(log())
        assert 0 < ran < 1000
        assert all(int(e["start"]) <= job.timeout_at for e in log())  # type: ignore[call-overload]
        task = Runtime(real_store).tasks.get("boxed")
        assert task is not None and task.state == "done"


async def test_a_job_asking_to_sleep_past_its_deadline_fails_at_that_sleep(
    real_store: SqlStore,
) -> None:
    async with worker_for(real_store):
        Runtime(real_store).start(jobs.timeboxed, id="boxed")
        job = await real_store.wait("boxed", timeout=10)
    with pytest.raises(StoredError) as failed:
        Runtime.result(job)
    assert failed.value.type == "WaitPastDeadline"
    assert (
        "asked to sleep until" in failed.value.message and "longer timeout" in failed.value.message
    )


async def test_cancelling_a_running_job_stops_it_at_once(
    real_store: SqlStore, log: Callable[[], list[dict[str, object]]]
) -> None:
    async with worker_for(real_store) as worker:
        runtime = Runtime(real_store)
        runtime.start(jobs.long_steps, 50, 0.05, id="long")
        await eventually(lambda: len(log()) >= 2)
        assert runtime.cancel("long").fresh
        # The steps recorded by the time the cancel committed (a step's write racing the
        # cancel may commit just before it, with a clock reading just after it).
        recorded = {p.id for p in real_store.search("long.*").promises}
        await eventually(lambda: "long" not in worker.running)  # its run was stopped at once
        ended = time.time() * 1000
        await looked_again(worker)
        # Nothing of it started after its run ended (a step already in its thread may
        # still have finished, and logged, after that).
        assert all(int(e["start"]) <= ended for e in log())  # type: ignore[call-overload]
        assert len(log()) < 50
        # No step was recorded after the cancel: a stopped run's writes are refused.
        assert {p.id for p in real_store.search("long.*").promises} == recorded
    assert real_store.get("long").state == "rejected_canceled"


async def test_a_cancelled_sleeping_job_never_wakes(
    real_store: SqlStore, log: Callable[[], list[dict[str, object]]]
) -> None:
    async with worker_for(real_store) as worker:
        runtime = Runtime(real_store)
        runtime.start(jobs.sleeper, 0.4, id="nap")
        await eventually(
            lambda: (t := runtime.tasks.get("nap")) is not None and t.waiting_on == "nap.1"
        )
        runtime.cancel("nap")
        # The moment it would have woken comes and goes: the timer fires, the job stays.
        await eventually(lambda: real_store.get("nap.1").state == "resolved")
        await looked_again(worker)
        assert not worker.running
    assert real_store.get("nap").state == "rejected_canceled"
    with pytest.raises(Exception, match="does not exist"):
        real_store.get("nap.2")  # the step after the sleep never ran


async def test_a_jobs_own_steps_cannot_be_cancelled_apart_from_it(real_store: SqlStore) -> None:
    # Cancelling the sleep of job "nap" (its step nap.1) would fail the job in a way it
    # never chose: refused, and the job sleeps on.
    async with worker_for(real_store):
        runtime = Runtime(real_store)
        runtime.start(jobs.sleeper, 600, id="nap")
        await eventually(
            lambda: (t := runtime.tasks.get("nap")) is not None and t.waiting_on == "nap.1"
        )
        for step in ("nap.0", "nap.1"):
            with pytest.raises(InvalidArgument, match="is a step of the job 'nap'"):
                runtime.cancel(step)
        assert real_store.get("nap.1").pending and real_store.get("nap").pending
        runtime.cancel("nap")
    assert real_store.get("nap").state == "rejected_canceled"


async def test_a_non_json_result_fails_the_job_with_a_clear_error(real_store: SqlStore) -> None:
    async with worker_for(real_store):
        runtime = Runtime(real_store)
        runtime.start(jobs.bad_result, id="bad")
        runtime.start(jobs.bad_step_result, id="badstep")
        for job_id in ("bad", "badstep"):
            with pytest.raises(StoredError, match="is not JSON") as failed:
                await finish(real_store, job_id)
            assert failed.value.type == "NotSerializable"


async def test_an_oversize_result_fails_the_job_with_the_limit(tmp_path: Path) -> None:
    with open_store(
        f"sqlite:///{tmp_path}/big.db", max_payload_bytes=1000, poll_interval=0.05
    ) as store:
        async with worker_for(store):
            Runtime(store).start(jobs.big_result, 5000, id="big")
            with pytest.raises(StoredError, match="the limit is 1000 bytes"):
                await finish(store, "big")


def test_bad_job_arguments_are_refused_before_anything_is_stored(real_store: SqlStore) -> None:
    runtime = Runtime(real_store)
    with pytest.raises(InvalidArgument, match="arguments do not fit"):
        runtime.start(jobs.squares, 1, 2, 3, 4)
    with pytest.raises(
        InvalidArgument, match=r"(?s)argument 'n' of tests\.squares is invalid: .*valid integer"
    ):
        runtime.start(jobs.squares, "three")
    from agent_tools import builtin_jobs

    with pytest.raises(InvalidArgument, match="is not JSON"):
        runtime.start(builtin_jobs.approval, "ok?", {"when": object()})
    with pytest.raises(UnknownJob, match=r"available: .*tests\.squares"):
        runtime.start("tests.nope")
    assert real_store.search().promises == []


def test_durable_refuses_sync_functions_and_name_clashes() -> None:
    with pytest.raises(InvalidArgument, match="needs an async function"):
        durable(lambda ctx: None)
    with pytest.raises(InvalidArgument, match="already taken"):

        @durable(name="tests.squares")
        async def other(ctx: object) -> None: ...


async def test_a_worker_leaves_jobs_of_kinds_it_lacks_pending_for_one_that_has_them(
    real_store: SqlStore,
) -> None:
    runtime = Runtime(real_store)
    runtime.start(jobs.inner, 3, id="other-kind")
    runtime.start(jobs.squares, 2, id="mine")
    async with worker_for(real_store, kinds={"tests.squares"}):
        assert await finish(real_store, "mine") == [0, 1]
        view = runtime.view("other-kind")
        assert view.promise.pending and view.task is not None
        assert (view.task.state, view.task.attempts) == ("ready", 0)  # never claimed, never failed
        assert view.worker is not None and view.worker.kind == "tests.inner"
        assert not view.worker.alive and view.worker.last_seen is None
    async with worker_for(real_store):  # a worker that has every kind
        assert await finish(real_store, "other-kind") == 9 + 16


async def test_a_cron_schedule_starts_one_job_per_tick_whatever_the_number_of_firers(
    tmp_path: Path,
) -> None:
    clock = FakeClock(int(datetime(2027, 3, 1, 8, 59, tzinfo=UTC).timestamp() * 1000))
    with open_store(f"sqlite:///{tmp_path}/cron.db", clock=clock) as store:
        runtime = Runtime(store)
        from promises.schedules import Schedules

        first, second = Schedules(runtime), Schedules(Runtime(store))
        schedule = first.add("daily", "0 9 * * *", jobs.squares, 1)
        assert schedule.next_fire_at == int(
            datetime(2027, 3, 1, 9, 0, tzinfo=UTC).timestamp() * 1000
        )
        assert first.fire_due() == 0
        clock.advance(60_000)
        assert first.fire_due() + second.fire_due() == 1
        clock.advance(3 * 24 * 3_600_000)  # three missed ticks fire once
        assert second.fire_due() + first.fire_due() == 1
        fired = sorted(p.id for p in store.search("daily@*").promises)
        assert fired == [
            f"daily@{schedule.next_fire_at}",
            f"daily@{schedule.next_fire_at + 3 * 86_400_000}",
        ]
        first.cancel("daily")
        clock.advance(2 * 86_400_000)
        assert first.fire_due() == 0
        with pytest.raises(InvalidArgument, match="bad cron expression"):
            first.add("bad", "every tuesday", jobs.squares, 1)
        with pytest.raises(InvalidArgument, match="unknown time zone"):
            first.add("tz", "0 9 * * *", jobs.squares, 1, timezone="Mars/Olympus")


async def test_a_store_outage_under_a_running_job_interrupts_it_and_never_fails_it(
    tmp_path: Path, log: Callable[[], list[dict[str, object]]], caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    path = tmp_path / "locked.db"
    with open_store(f"sqlite:///{path}?busy_timeout=100", poll_interval=0.05) as store:
        async with worker_for(store):
            Runtime(store).start(jobs.long_steps, 6, 0.1, id="outage")
            await eventually(lambda: len(log()) >= 1)
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            # A checkpoint fails with "database is locked" and the run is interrupted.
            await eventually(lambda: "job outage interrupted by the store" in caplog.text)
            assert store.get("outage").pending
            blocker.execute("COMMIT")
            blocker.close()
            assert await finish(store, "outage") == sum(i * i for i in range(6))
    assert "replaying in" in caplog.text


def test_a_bad_busy_timeout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidArgument, match="busy_timeout='soon' must be a number of milliseconds"
    ):
        open_store(f"sqlite:///{tmp_path}/x.db?busy_timeout=soon")


async def test_ctx_now_is_the_store_clock_and_replays_the_same_instant(tmp_path: Path) -> None:
    clock = FakeClock()

    @durable(name="tests.reads_now")
    async def reads_now(ctx: object) -> list[str]:
        first = await ctx.now()  # type: ignore[attr-defined]
        await ctx.sleep(60)  # type: ignore[attr-defined]
        second = await ctx.now()  # type: ignore[attr-defined]
        return [first.isoformat(), second.isoformat()]

    with open_store(f"sqlite:///{tmp_path}/now.db", clock=clock, poll_interval=0.05) as store:
        async with worker_for(store) as worker:
            Runtime(store).start(reads_now, id="now")
            await eventually(lambda: store.search("now.1").promises != [])
            clock.advance(61_000)
            worker.wake()
            result = await finish(store, "now")
    assert result == [
        datetime.fromtimestamp(1_800_000_000, tz=UTC).isoformat(),
        datetime.fromtimestamp(1_800_000_061, tz=UTC).isoformat(),
    ]


HELD_RUNS: list[str] = []
HELD_RELEASE: dict[str, asyncio.Event] = {}


@durable(name="tests.held_until_released")
async def held_until_released(ctx: Context, key: str) -> str:
    HELD_RUNS.append(key)
    await HELD_RELEASE[key].wait()
    return key


async def test_a_job_adopted_while_a_heartbeat_is_in_flight_keeps_running(
    real_store: SqlStore,
) -> None:
    """A heartbeat's answer lists the leases it extended; a job started here while it was
    in flight is not among them, yet its lease is fine: it must not be stopped as lost
    (it then sat idle until its lease ran out — 30 s by default — and ran twice)."""
    HELD_RUNS.clear()
    HELD_RELEASE.update(a=asyncio.Event(), b=asyncio.Event())
    async with worker_for(real_store, lease=timedelta(seconds=0.3)) as worker:
        runtime = worker.runtime
        tasks = runtime.tasks
        original = tasks.heartbeat
        started_b: list[str] = []

        async def heartbeat_racing_a_start(
            owner: Any, lease_ms: int, ids: Any
        ) -> set[tuple[str, int]]:
            held = await original(owner, lease_ms, ids)
            if not started_b:  # the start commits after the heartbeat's snapshot
                started_b.append((await runtime.astart(held_until_released, "b")).promise.id)
            return held

        tasks.heartbeat = heartbeat_racing_a_start  # type: ignore[method-assign]
        job_a = (await runtime.astart(held_until_released, "a")).promise.id
        await eventually(lambda: len(started_b) == 1 and HELD_RUNS.count("b") == 1,
                         what="job b started during a heartbeat")  # fmt: skip
        # Stopped as lost, b could only finish by running again after its lease.
        HELD_RELEASE["a"].set()
        HELD_RELEASE["b"].set()
        assert await finish(real_store, job_a) == "a"
        assert await finish(real_store, started_b[0]) == "b"
    assert HELD_RUNS.count("b") == 1, HELD_RUNS  # never stopped, never run again


STOPPED_STEPS: list[int] = []
STOPPED_GO: dict[str, asyncio.Event] = {}  # made in each test's own event loop


def counted_step(n: int) -> int:
    STOPPED_STEPS.append(n)
    return n


@durable(name="tests.step_then_wait")
async def step_then_wait(ctx: Context) -> int:
    first = await ctx.run(counted_step, 1)
    await STOPPED_GO["go"].wait()  # not a step: stands for work between steps
    return first


async def test_a_step_finished_before_a_graceful_stop_is_not_run_again(
    real_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished step's record may wait for the job's next write; a worker that stops
    (its client left, SIGTERM) writes it before handing the job back."""
    import promises.context

    monkeypatch.setattr(promises.context, "DEFER_S", 3600.0)  # the record stays deferred
    STOPPED_STEPS.clear()
    STOPPED_GO["go"] = asyncio.Event()
    async with worker_for(real_store) as worker:
        job = (await worker.runtime.astart(step_then_wait)).promise.id
        await eventually(lambda: STOPPED_STEPS == [1], what="the step ran")
    # stopped; the next worker replays the job
    STOPPED_GO["go"].set()
    async with worker_for(real_store):
        assert await finish(real_store, job) == 1
    assert STOPPED_STEPS == [1]  # the finished step was not run again


# -- start and wait in one call -----------------------------------------------------------


async def test_start_and_wait_answers_with_the_result_without_reading_the_job(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[object] = []
    # The waiter's fallback poll (30 s) never comes within the test, however slow the
    # machine: only the settle can wake it.
    with open_store(store_url, poll_interval=30) as store:
        real_read = store.aget_many

        async def counted(ids: Any, **options: Any) -> Any:
            reads.append(ids)
            return await real_read(ids, **options)

        async with worker_for(store) as worker:
            await looked_again(worker)
            monkeypatch.setattr(store, "aget_many", counted)
            started, done = await worker.runtime.astart_and_wait(jobs.squares, 3, wait_s=20)
    assert started.fresh and started.promise.id == done.id
    assert done.state == "resolved" and Runtime.result(done) == [0, 1, 4]
    assert reads == []  # listening since before the start: the settle itself woke it


async def test_start_and_wait_returns_the_job_still_pending_when_the_wait_ends(
    real_store: SqlStore,
) -> None:
    async with worker_for(real_store) as worker:
        started, job = await worker.runtime.astart_and_wait(
            jobs.approval, 5, wait_s=0.2, id="waits-for-a-person"
        )
        assert started.fresh and job.pending and job.id == "waits-for-a-person"
        # The same start again is the same job: it answers at its end.
        await eventually(lambda: worker.runtime.view("waits-for-a-person").waited_on is not None)
        decision = worker.runtime.view("waits-for-a-person").waited_on
        await real_store.asettle(str(decision), "resolve", value=Value("true"))
        again, done = await worker.runtime.astart_and_wait(
            jobs.approval, 5, wait_s=10, id="waits-for-a-person"
        )
    assert not again.fresh and done.state == "resolved"


async def test_start_and_wait_wakes_for_a_settle_made_by_another_store(
    real_store: SqlStore, store_url: str
) -> None:
    async with worker_for(real_store) as worker:
        waiting = asyncio.create_task(
            worker.runtime.astart_and_wait(jobs.sleeper, 3600, wait_s=20, id="long-nap")
        )
        await eventually(lambda: "long-nap" in real_store.get_many(["long-nap"]))
        with open_store(store_url) as other:
            await asyncio.to_thread(Runtime(other).cancel, "long-nap")
        _, job = await asyncio.wait_for(waiting, 15)
    assert job.state == "rejected_canceled"


@pytest.mark.parametrize("wait_s", [-1, float("nan"), "soon", True])
async def test_start_and_wait_refuses_a_bad_wait_and_starts_nothing(
    real_store: SqlStore, wait_s: object
) -> None:
    runtime = Runtime(real_store)
    with pytest.raises(InvalidArgument, match="wait_s"):
        await runtime.astart_and_wait(jobs.squares, 1, wait_s=wait_s, id="never")  # type: ignore[arg-type]
    assert real_store.get_many(["never"]) == {}


class Place(BaseModel):
    city: str


@durable(name="tests.places")
async def places(ctx: Context, n: int, where: list[Place], note: str = "") -> int:
    return n


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (["2", [{"city": "Porto"}], "x"], {}),  # every argument by position
        ([], {"n": "2", "where": [{"city": "Porto"}], "note": "x"}),
        (["2"], {"note": "x", "where": [{"city": "Porto"}]}),
    ],
)
def test_arguments_by_position_or_by_name_are_bound_and_converted_alike(
    args: list[Any], kwargs: dict[str, Any]
) -> None:
    assert validated_arguments(places, args, kwargs) == ([2, [Place(city="Porto")], "x"], {})


@durable(name="tests.annotated")
async def annotated(ctx: Context, seconds: Annotated[int, {"unit": "s"}]) -> int:
    return seconds


def test_an_argument_whose_annotation_cannot_be_hashed_is_still_taken() -> None:
    assert validated_arguments(annotated, [3], {}) == ([3], {})
    assert validated_arguments(annotated, [], {"seconds": 3}) == ([3], {})


def test_arguments_by_position_are_checked_against_their_annotations() -> None:
    with pytest.raises(InvalidArgument, match=r"argument 'n' of tests\.places is invalid"):
        validated_arguments(places, ["two", [], ""], {})
    with pytest.raises(InvalidArgument, match=r"argument 'where' of tests\.places is invalid"):
        validated_arguments(places, [1, [{"town": "Porto"}], ""], {})
    with pytest.raises(InvalidArgument, match=r"arguments do not fit tests\.places"):
        validated_arguments(places, [1, [], "", "extra"], {})


async def test_step_code_in_a_thread_answers_its_value_or_error_in_its_context() -> None:
    import concurrent.futures
    import contextvars

    from promises.worker import _in_thread

    loop = asyncio.get_running_loop()
    where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="nowhere")
    where.set("the caller's")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        assert await _in_thread(loop, pool, where.get) == "the caller's"
        with pytest.raises(ZeroDivisionError):
            await _in_thread(loop, pool, lambda: 1 / 0)
        with pytest.raises(RuntimeError, match="StopIteration"):  # not a hang
            await asyncio.wait_for(_in_thread(loop, pool, lambda: next(iter([]))), 10)
        # A step cancelled while it waits for a thread never starts.
        release, ran = asyncio.Event(), []
        blocker = _in_thread(loop, pool, lambda: asyncio.run_coroutine_threadsafe(
            release.wait(), loop).result(10))  # fmt: skip
        queued = _in_thread(loop, pool, lambda: ran.append("queued"))
        queued.cancel()
        release.set()
        await blocker
        assert await _in_thread(loop, pool, lambda: "after") == "after"
        assert ran == []
    finally:
        pool.shutdown(wait=True)
