"""Leases and fencing, on every backend: claims respect their limit, their kinds and
never overlap; a stale owner's writes are refused; expired leases and dead owners are
reclaimed; a task waiting on a promise wakes when anyone settles it — a bare store in
another process included — and a settle racing a suspend is never lost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import Collection
from typing import Any

import psycopg
import pytest

from promises import PromiseAlreadyExists, SqlStore, Value, open_store
from promises.database import Tx
from promises.records import STEP_TAG, TIMER_TAG, Promise
from promises.runtime import Runtime
from promises.store import NewPromise
from promises.tasks import Claim, LeaseLost, Owner, StepRecord
from promises.worker import Worker
from tests import durable_jobs as jobs
from tests.conftest import PG_URL, FakeClock, requires_postgres
from tests.waiting import eventually, until

LEASE = 30_000
ALL = frozenset(["tests.squares", "tests.inner", "tests.timeboxed", "tests.approval"])
pytestmark = pytest.mark.anyio


def _start(store: SqlStore, n: int) -> Runtime:
    runtime = Runtime(store)
    for i in range(n):
        runtime.start(jobs.squares, 1, id=f"t-{i}")
    return runtime


def claim(runtime: Runtime, owner: Owner, limit: int, kinds: Collection[str] = ALL) -> list[Claim]:
    found = runtime.store.db.write(
        lambda tx: runtime.tasks.claim_tx(tx, owner, kinds, limit, LEASE), durable=False
    )
    return [c for c, _job, _ready in found]


def fence(runtime: Runtime, held: Claim) -> None:
    runtime.store.db.write(lambda tx: runtime.tasks.fence_tx(tx, held))


def test_claims_respect_their_limit_and_never_overlap(store: SqlStore) -> None:
    runtime = _start(store, 10)
    a, b = Owner.here(), Owner.here()
    first = claim(runtime, a, 4)
    second = claim(Runtime(store), b, 4)
    third = claim(runtime, a, 4)
    assert [len(first), len(second), len(third)] == [4, 4, 2]
    ids = [c.id for c in first + second + third]
    assert sorted(ids) == sorted(f"t-{i}" for i in range(10))
    assert claim(runtime, b, 4) == []


def test_a_worker_claims_only_the_kinds_it_has(store: SqlStore) -> None:
    runtime = Runtime(store)
    runtime.start(jobs.squares, 1, id="sq")
    runtime.start(jobs.inner, 1, id="in")
    assert claim(runtime, Owner.here(), 10, kinds={"tests.unknown"}) == []
    assert [c.id for c in claim(runtime, Owner.here(), 10, kinds={"tests.inner"})] == ["in"]
    assert [c.id for c in claim(runtime, Owner.here(), 10, kinds={"tests.squares"})] == ["sq"]


def test_a_stale_owner_is_fenced_off_after_its_lease_expires_and_another_claims(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = _start(store, 1)
    a, b = Owner.here(), Owner.here()
    stale = claim(runtime, a, 1)[0]
    clock.advance(LEASE)  # the lease expires without a heartbeat
    fresh = claim(runtime, b, 1)[0]
    assert fresh.id == stale.id and fresh.counter == stale.counter + 1
    with pytest.raises(LeaseLost, match="no longer held"):
        fence(runtime, stale)
    held_by_a = store.db.write(lambda tx: runtime.tasks.heartbeat_tx(tx, a, LEASE, [stale.id]))
    held_by_b = store.db.write(lambda tx: runtime.tasks.heartbeat_tx(tx, b, LEASE, [fresh.id]))
    assert held_by_a == set() and held_by_b == {(fresh.id, fresh.counter)}
    fence(runtime, fresh)  # the new owner's writes go through


def test_a_heartbeat_keeps_the_lease_so_nobody_else_claims(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = _start(store, 1)
    owner = Owner.here()
    held = claim(runtime, owner, 1)[0]
    clock.advance(LEASE - 1)
    assert store.db.write(lambda tx: runtime.tasks.heartbeat_tx(tx, owner, LEASE, [held.id])) == {
        (held.id, held.counter)
    }
    clock.advance(LEASE - 1)
    assert claim(runtime, Owner.here(), 1) == []


def test_a_heartbeat_extends_only_the_tasks_its_worker_runs(
    store: SqlStore, clock: FakeClock
) -> None:
    # A claim whose commit the worker never heard of (the connection broke as it
    # committed) is held by it, but nobody runs it: its lease must run out.
    runtime = _start(store, 2)
    owner = Owner.here()
    running, unheard = claim(runtime, owner, 2)
    clock.advance(LEASE - 1)
    extended = store.db.write(lambda tx: runtime.tasks.heartbeat_tx(tx, owner, LEASE, [running.id]))
    assert extended == {(running.id, running.counter)}
    clock.advance(1)
    (taken,) = claim(runtime, Owner.here(), 2)
    assert (taken.id, taken.counter) == (unheard.id, unheard.counter + 1)


async def test_a_dead_owner_on_this_host_is_reclaimed_at_once(store: SqlStore) -> None:
    runtime = _start(store, 1)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    here = Owner.here()
    dead = Owner(f"{here.host}:{gone.stdout.strip()}:x", here.host, int(gone.stdout))
    claim(runtime, dead, 1)
    assert claim(runtime, here, 1) == []  # its lease is still running
    assert await runtime.tasks.reclaim_dead_owners(here) == 1
    assert [c.id for c in claim(runtime, here, 1)] == ["t-0"]


def test_settling_a_job_finishes_its_task_and_wakes_tasks_waiting_on_it(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = _start(store, 1)
    held = claim(runtime, Owner.here(), 1)[0]
    store.create("outside", timeout_at=clock() + 10 * LEASE)
    store.db.write(lambda tx: runtime.tasks.suspend_tx(tx, held, clock() + 10 * LEASE, "outside"))
    assert claim(runtime, Owner.here(), 1) == []
    store.resolve("outside")
    assert [c.id for c in claim(runtime, Owner.here(), 1)] == ["t-0"]
    runtime.cancel("t-0")
    task = runtime.tasks.get("t-0")
    assert task is not None and task.state == "done"


def test_a_settle_by_a_bare_store_in_another_process_makes_the_waiting_task_ready(
    store_url: str,
) -> None:
    with open_store(store_url) as store:
        runtime = _start(store, 1)
        held = claim(runtime, Owner.here(), 1)[0]
        far = store.clock() + 10 * LEASE
        store.create("outside", timeout_at=far)
        store.db.write(lambda tx: runtime.tasks.suspend_tx(tx, held, far, "outside"))
        settle = (
            "import sys; from promises import open_store, Value; "
            "open_store(sys.argv[1]).resolve('outside', value=Value('\"yes\"'))"
        )
        subprocess.run([sys.executable, "-c", settle, store_url], check=True, timeout=60)
        task = runtime.tasks.get("t-0")
        assert task is not None and task.state == "ready" and task.ready_at <= store.clock()
        assert [c.id for c in claim(runtime, Owner.here(), 1)] == ["t-0"]


async def test_a_job_waiting_on_a_promise_resumes_at_once_when_another_process_settles_it(
    store_url: str,
) -> None:
    # The worker never polls within the test (poll_interval=60): only the change feed
    # can tell it that a bare store in another process settled the promise.
    with open_store(store_url, poll_interval=60) as store:
        runtime = Runtime(store)
        worker = Worker(runtime, poll_interval=60)
        running = asyncio.create_task(worker.run())
        try:
            runtime.start(jobs.approval, 5, 600, id="ask")
            await eventually(lambda: _waiting_on(runtime, "ask"), timeout=20)
            settle = (
                "import sys; from promises import open_store, Value; "
                "open_store(sys.argv[1]).resolve('ask.0', value=Value('\"ok\"'))"
            )
            await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", settle, store_url], check=True, timeout=60
            )
            done = await store.wait("ask", timeout=20)
        finally:
            worker.stop()
            await running
    assert Runtime.result(done) == {"id": "ask.0", "decided": True, "answer": "ok"}


def _waiting_on(runtime: Runtime, job_id: str) -> bool:
    task = runtime.tasks.get(job_id)
    return task is not None and task.state == "ready" and task.waiting_on is not None


async def test_a_claimed_task_whose_job_already_timed_out_is_finished_not_run(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = Runtime(store)
    runtime.start(jobs.timeboxed, id="t-0")
    found = store.db.write(
        lambda tx: runtime.tasks.claim_tx(tx, Owner.here(), ALL, 1, LEASE), durable=False
    )
    held, job, _ready = found[0]
    clock.advance(10_000)  # the job's deadline passes; nothing has read it yet
    await runtime.execute(held, job)
    task = runtime.tasks.get("t-0")
    assert task is not None and task.state == "done"
    assert store.get("t-0").state == "rejected_timedout"


def test_retention_collects_a_settled_jobs_task_with_its_promise(
    store: SqlStore, clock: FakeClock
) -> None:
    from datetime import timedelta

    runtime = _start(store, 2)
    runtime.cancel("t-0")
    clock.advance(60_000)
    assert store.collect(max_age=timedelta(seconds=30)) == 1
    assert runtime.tasks.get("t-0") is None
    assert runtime.tasks.get("t-1") is not None  # still pending: kept


# -- the suspend/settle race on PostgreSQL, forced in both orders ------------------------


def _blocked_on_a_lock(application_name: str) -> bool:
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = %s AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()
    return bool(row and row[0])


def _waiting_task(store: SqlStore) -> tuple[Runtime, Claim, int]:
    runtime = _start(store, 1)
    held = claim(runtime, Owner.here(), 1)[0]
    far = store.clock() + 100 * LEASE
    store.create("outside", timeout_at=far)
    return runtime, held, far


@requires_postgres
def test_a_settle_arriving_during_a_suspend_waits_for_it_and_then_wakes_the_task(
    pg_url: str,
) -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"
    with open_store(f"{pg_url}&application_name={name}") as store:
        runtime, held, far = _waiting_task(store)
        # The suspend's transaction has locked the promise and written waiting_on, but
        # not committed yet.
        suspending = store.backend.connect("suspend", transactional=True)
        runtime.tasks.suspend_tx(Tx(suspending.cursor(), store.sql), held, far, "outside")
        settled: list[Promise] = []
        settler = threading.Thread(target=lambda: settled.append(store.resolve("outside").promise))
        settler.start()
        until(lambda: _blocked_on_a_lock(f"{name}:writer"))  # the settle waits for the suspend
        suspending.commit()
        suspending.close()
        settler.join(20)
        assert settled and settled[0].state == "resolved"
        task = runtime.tasks.get(held.id)
        assert task is not None and task.state == "ready" and task.ready_at <= store.clock()


@requires_postgres
def test_a_suspend_arriving_during_a_settle_waits_for_it_and_sees_it_settled(
    pg_url: str,
) -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"
    with open_store(f"{pg_url}&application_name={name}") as store:
        runtime, held, far = _waiting_task(store)
        # The settle's transaction has settled the promise (its trigger found no task
        # waiting on it yet) but not committed.
        settling = store.backend.connect("settle", transactional=True)
        store.settle_tx(Tx(settling.cursor(), store.sql), "outside", "resolve", value=Value("1"))
        suspended: list[bool] = []

        def suspend() -> None:
            store.db.write(lambda tx: runtime.tasks.suspend_tx(tx, held, far, "outside"))
            suspended.append(True)

        suspender = threading.Thread(target=suspend)
        suspender.start()
        until(lambda: _blocked_on_a_lock(f"{name}:writer"))  # the suspend waits for the settle
        settling.commit()
        settling.close()
        suspender.join(20)
        assert suspended
        task = runtime.tasks.get(held.id)
        assert task is not None and task.state == "ready" and task.ready_at <= store.clock()


# -- a job's end on PostgreSQL: fence, last steps and settle in one statement ------------


def _steps(job_id: str) -> list[StepRecord]:
    return [
        StepRecord(
            f"{job_id}.0", "resolve", Value(None, {"step": "a"}), Value("1", {"attempts": "1"})
        ),
        StepRecord(f"{job_id}.1", "reject", Value(None, {"step": "b"}), Value('"boom"')),
    ]


def _finish(runtime: Runtime, held: Claim, steps: list[StepRecord]) -> tuple[Any, list[Promise]]:
    timeout_at = runtime.store.get(held.id).timeout_at
    statements: list[str] = []
    real_one = Tx.one

    def counted(tx: Tx, statement: str, params: Any = None) -> Any:
        statements.append(statement)
        return real_one(tx, statement, params)

    def unit(tx: Tx) -> tuple[Any, list[Promise]]:
        Tx.one = counted  # type: ignore[method-assign]
        try:
            return runtime.tasks.finish_tx(
                tx, held, "resolve", Value("42"), f"{held.id}:done", steps, timeout_at
            )
        finally:
            Tx.one = real_one  # type: ignore[method-assign]

    transition, recorded = runtime.store.db.write(unit)
    LAST_STATEMENTS[:] = statements
    return transition, recorded


#: The statements the last ``_finish`` ran (``Tx.one`` calls).
LAST_STATEMENTS: list[str] = []


@requires_postgres
def test_a_jobs_end_writes_its_last_steps_and_settles_it_in_one_statement(pg_url: str) -> None:
    with open_store(pg_url) as store:
        runtime = _start(store, 1)
        held = claim(runtime, Owner.here(), 1)[0]
        steps = _steps(held.id)
        transition, recorded = _finish(runtime, held, steps)
        assert [store.sql.finish_job] == LAST_STATEMENTS  # one round trip for all of it
        assert transition.fresh and transition.promise.state == "resolved"
        assert store.get(held.id).value.data == "42"
        for step, written in zip(steps, recorded, strict=True):
            stored = store.get(step.id)
            assert stored == written
            assert (stored.state, stored.param, stored.value) == (
                "resolved" if step.action == "resolve" else "rejected",
                step.param,
                step.value,
            )
        task = runtime.tasks.get(held.id)
        assert task is not None and task.state == "done"


@requires_postgres
def test_a_step_recorded_before_a_jobs_end_keeps_its_first_outcome(pg_url: str) -> None:
    with open_store(pg_url) as store:
        runtime = _start(store, 1)
        held = claim(runtime, Owner.here(), 1)[0]
        first, second = _steps(held.id)
        earlier = store.db.write(
            lambda tx: store.record_tx(
                tx, first.id, "reject", first.param, Value('"earlier"'), timeout_at=10**15
            )
        )
        _transition, recorded = _finish(runtime, held, [first, second])
        assert recorded[0] == earlier == store.get(first.id)  # the first outcome stands
        assert recorded[1] == store.get(second.id) and recorded[1].state == "rejected"
        assert store.get(held.id).state == "resolved"


@requires_postgres
def test_a_stale_owners_end_writes_neither_its_steps_nor_its_result(
    pg_url: str, clock: FakeClock
) -> None:
    with open_store(pg_url, clock=clock) as store:
        runtime = _start(store, 1)
        stale = claim(runtime, Owner.here(), 1)[0]
        clock.advance(LEASE)
        claim(runtime, Owner.here(), 1)  # another worker holds it now
        with pytest.raises(LeaseLost):
            _finish(runtime, stale, _steps(stale.id))
        assert store.get(stale.id).pending
        assert store.get_many([s.id for s in _steps(stale.id)]) == {}


# -- a job going to sleep: its timer and its wait in one unit --------------------------------


def _timer(store: SqlStore, job_id: str, due_in_ms: int) -> NewPromise:
    """The timer a job's ``ctx.sleep`` creates (as ``Context.sleep`` makes it)."""
    step_id = f"{job_id}.1"
    return store.check_create(
        step_id, timeout_at=store.clock() + due_in_ms, param=Value(None, {STEP_TAG: "sleep"}),
        tags={TIMER_TAG: "true"}, ikey=step_id,
    )  # fmt: skip


def _claimed_with_timer(store: SqlStore, owner: Owner) -> tuple[Runtime, Claim, NewPromise]:
    """A job claimed by ``owner``, and the timer it would sleep on."""
    runtime = _start(store, 1)
    held = claim(runtime, owner, 1)[0]
    return runtime, held, _timer(store, held.id, 60_000)


def _sleep(runtime: Runtime, held: Claim, timer: NewPromise, one_statement: bool = False) -> None:
    runtime.store.db.write(
        lambda tx: runtime.tasks.wait_tx(tx, held, timer.timeout_at, timer.id, timer),
        one_statement=one_statement,
    )


def test_a_job_going_to_sleep_writes_its_timer_and_waits_on_it(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime, held, timer = _claimed_with_timer(store, Owner.here())
    _sleep(runtime, held, timer)
    written = store.get(timer.id)
    assert written == store.created(timer, clock.now)  # as a plain create writes it
    assert [p.id for p in store.search(tags={TIMER_TAG: "true"}).promises] == [timer.id]
    task = runtime.tasks.get(held.id)
    assert task is not None and (task.state, task.owner) == ("ready", None)
    assert (task.waiting_on, task.ready_at) == (timer.id, timer.timeout_at)
    assert claim(runtime, Owner.here(), 1) == []  # asleep
    store.resolve(timer.id)  # its time came early: the job is claimable at once
    assert [c.id for c in claim(runtime, Owner.here(), 1)] == [held.id]


def test_a_job_going_to_sleep_on_a_timer_written_before_waits_on_that_timer(
    store: SqlStore, clock: FakeClock
) -> None:
    # A replay's race: the timer exists, made with the same key.
    runtime, held, timer = _claimed_with_timer(store, Owner.here())
    store.db.write(lambda tx: store.create_tx(tx, timer))
    clock.advance(5)
    _sleep(runtime, held, timer)
    assert store.get(timer.id).created_at == clock.now - 5  # not made again
    task = runtime.tasks.get(held.id)
    assert task is not None and (task.state, task.waiting_on) == ("ready", timer.id)
    assert claim(runtime, Owner.here(), 1) == []  # asleep
    store.resolve(timer.id)
    assert [c.id for c in claim(runtime, Owner.here(), 1)] == [held.id]


@pytest.mark.parametrize(
    ("one_statement", "due_in_ms"), [(False, 60_000), (True, 60_000), (True, 0)]
)
def test_a_job_going_to_sleep_on_a_timer_id_taken_by_something_else_writes_nothing(
    store: SqlStore, clock: FakeClock, one_statement: bool, due_in_ms: int
) -> None:
    owner = Owner.here()
    runtime = _start(store, 1)
    held = claim(runtime, owner, 1)[0]
    timer = _timer(store, held.id, due_in_ms)
    store.create(timer.id, timeout_at=timer.timeout_at, ikey="someone-else")
    before = runtime.tasks.get(held.id)
    clock.advance(5)  # a write to the task would show in its updated_at
    with pytest.raises(PromiseAlreadyExists):
        _sleep(runtime, held, timer, one_statement)
    task = runtime.tasks.get(held.id)
    assert task is not None and (task.state, task.owner) == ("claimed", owner.id)
    assert before is not None and task.updated_at == before.updated_at
    assert store.get(timer.id).ikey_create == "someone-else"


# As a job's runtime writes it when nothing else waits (on PostgreSQL its first
# statement then commits alone), and with its timer due already (the general path).
@pytest.mark.parametrize(
    ("one_statement", "due_in_ms"), [(False, 60_000), (True, 60_000), (True, 0)]
)
def test_a_stale_owner_going_to_sleep_writes_neither_its_timer_nor_its_wait(
    store: SqlStore, clock: FakeClock, one_statement: bool, due_in_ms: int
) -> None:
    runtime = _start(store, 1)
    stale = claim(runtime, Owner.here(), 1)[0]
    clock.advance(LEASE)
    other = Owner.here()
    claim(runtime, other, 1)  # another worker holds it now
    timer = _timer(store, stale.id, due_in_ms)
    with pytest.raises(LeaseLost):
        _sleep(runtime, stale, timer, one_statement)
    assert store.get_many([timer.id]) == {}
    task = runtime.tasks.get(stale.id)
    assert task is not None and (task.state, task.owner) == ("claimed", other.id)


@requires_postgres
def test_a_settle_reads_only_the_tasks_waiting_on_that_promise(pg_url: str) -> None:
    # When a promise settles, the store's trigger wakes the tasks waiting on it. With
    # many ready tasks and statistics that are behind (a fresh table here, never
    # analyzed), PostgreSQL once chose to read the index entry of every ready task for
    # that, on each settle. Its plan, as PostgreSQL's auto_explain reports it:
    with open_store(pg_url) as store:
        runtime = Runtime(store)
        batch = [runtime.prepare(jobs.squares, [1], {}, id=f"r-{i}") for i in range(5000)]
        store.db.write(lambda tx: [runtime.start_tx(tx, r) for r in batch])
        store.create("awaited", timeout_at=store.clock() + 3_600_000)
    plans: list[str] = []
    dsn = PG_URL.replace("+psycopg", "") + "?options=-csearch_path%3D" + pg_url.split("%3D")[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_nested_statements = on",
            "SET auto_explain.log_analyze = on",
            "SET client_min_messages = log",
        ):
            conn.execute(setting)
        with conn.transaction(force_rollback=True):
            conn.execute("UPDATE promises SET state = 'resolved', settled_at = 1 "
                         "WHERE id = 'awaited'")  # fmt: skip
    [wake] = [p for p in plans if "WHERE waiting_on = NEW.id" in p]
    assert "ix_tasks_waiting_on_state" in wake, wake
    assert "ix_tasks_state_lease" not in wake and "ix_tasks_ready" not in wake, wake
