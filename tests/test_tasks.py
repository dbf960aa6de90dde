"""Leases and fencing, on every backend: claims respect their limit and never overlap,
a stale owner's writes are refused, expired leases and dead owners are reclaimed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from promises import SqlStore
from promises.runtime import Runtime
from promises.tasks import LeaseLost, Owner
from tests import durable_jobs as jobs
from tests.conftest import FakeClock

LEASE = 30_000
pytestmark = pytest.mark.anyio


def _start(store: SqlStore, n: int) -> Runtime:
    runtime = Runtime(store)
    for i in range(n):
        runtime.start(jobs.squares, 1, id=f"t-{i}")
    return runtime


def test_claims_respect_their_limit_and_never_overlap(store: SqlStore) -> None:
    runtime = _start(store, 10)
    a, b = Owner.here(), Owner.here()
    first = runtime.tasks.claim(a, 4, LEASE)
    second = Runtime(store).tasks.claim(b, 4, LEASE)
    third = runtime.tasks.claim(a, 4, LEASE)
    assert [len(first), len(second), len(third)] == [4, 4, 2]
    ids = [c.id for c in first + second + third]
    assert sorted(ids) == sorted(f"t-{i}" for i in range(10))
    assert runtime.tasks.claim(b, 4, LEASE) == []


def test_a_stale_owner_is_fenced_off_after_its_lease_expires_and_another_claims(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = _start(store, 1)
    stale = runtime.tasks.claim(Owner.here(), 1, LEASE)[0]
    clock.advance(LEASE)  # the lease expires without a heartbeat
    fresh = runtime.tasks.claim(Owner.here(), 1, LEASE)[0]
    assert fresh.id == stale.id and fresh.counter == stale.counter + 1
    with pytest.raises(LeaseLost, match="no longer held"), store.transaction() as conn:
        runtime.tasks.fence_in(conn, stale)
    assert runtime.tasks.heartbeat([stale, fresh], LEASE) == [stale]
    with store.transaction() as conn:
        runtime.tasks.fence_in(conn, fresh)  # the new owner's writes go through


def test_a_heartbeat_keeps_the_lease_so_nobody_else_claims(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = _start(store, 1)
    claim = runtime.tasks.claim(Owner.here(), 1, LEASE)[0]
    clock.advance(LEASE - 1)
    assert runtime.tasks.heartbeat([claim], LEASE) == []
    clock.advance(LEASE - 1)
    assert runtime.tasks.claim(Owner.here(), 1, LEASE) == []


def test_a_dead_owner_on_this_host_is_reclaimed_at_once(store: SqlStore) -> None:
    runtime = _start(store, 1)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    here = Owner.here()
    dead = Owner(f"{here.host}:{gone.stdout.strip()}:x", here.host, int(gone.stdout))
    runtime.tasks.claim(dead, 1, LEASE)
    assert runtime.tasks.claim(here, 1, LEASE) == []  # its lease is still running
    assert runtime.tasks.reclaim_dead_owners(here) == 1
    assert [c.id for c in runtime.tasks.claim(here, 1, LEASE)] == ["t-0"]


def test_settling_a_job_finishes_its_task_and_wakes_tasks_waiting_on_it(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = _start(store, 1)
    claim = runtime.tasks.claim(Owner.here(), 1, LEASE)[0]
    store.create("outside", timeout_at=clock() + 10 * LEASE)
    runtime.tasks.suspend(claim, clock() + 10 * LEASE, "outside")
    assert runtime.tasks.claim(Owner.here(), 1, LEASE) == []
    store.resolve("outside")
    assert [c.id for c in runtime.tasks.claim(Owner.here(), 1, LEASE)] == ["t-0"]
    runtime.cancel("t-0")
    task = runtime.tasks.get("t-0")
    assert task is not None and task.state == "done"


async def test_a_claimed_task_whose_job_already_settled_is_finished_not_run(
    store: SqlStore, clock: FakeClock
) -> None:
    runtime = _start(store, 1)
    claim = runtime.tasks.claim(Owner.here(), 1, LEASE)[0]
    clock.advance(10 * 3_600_000)  # the job's timeout passes; nothing has swept it yet
    await runtime.execute(claim)
    task = runtime.tasks.get("t-0")
    assert task is not None and task.state == "done"
    assert store.get("t-0").state == "rejected_timedout"


def test_retention_collects_a_settled_jobs_task_with_its_promise(
    store: SqlStore, clock: FakeClock
) -> None:
    from datetime import timedelta

    runtime = _start(store, 2)
    runtime.cancel("t-0")
    clock.advance(60_000)  # t-1 is still within its one-hour timeout
    assert store.collect(max_age=timedelta(seconds=30)) == 1
    assert runtime.tasks.get("t-0") is None
    assert runtime.tasks.get("t-1") is not None  # still pending: kept
