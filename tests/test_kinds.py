"""Workers run only the kinds they have loaded (issue 9, item 4): two worker processes
with different job modules share one database and never fail each other's jobs; a job
whose kind no live worker has waits, and says for which kind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from promises import Runtime, SqlStore, open_store
from promises.functions import REGISTRY
from tests import durable_jobs as jobs
from tests import other_jobs
from tests.waiting import until

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


def worker(url: str, *modules: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "promises.worker", "--db", url]
    for module in modules:
        command += ["--jobs", module]
    # Its log goes to the test's output (shown when a test fails).
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=None)


def settled(store: SqlStore, ids: list[str]) -> bool:
    return not any(p.pending for p in store.get_many(ids).values())


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_two_workers_with_different_modules_run_each_their_own_kinds(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/k.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    with open_store(url) as store:
        runtime = Runtime(store, registry=REGISTRY)
        squares = [f"sq-{i}" for i in range(6)]
        others = [f"ot-{i}" for i in range(6)]
        first = worker(url, "tests.durable_jobs")
        second = worker(url, "tests.other_jobs")
        try:
            for i in range(6):
                runtime.start(jobs.squares, 3, id=squares[i])
                runtime.start(other_jobs.whoami, str(i), id=others[i])
            until(lambda: settled(store, squares + others), 60, "every job settles")
            results = {i: Runtime.result(store.get(i)) for i in others}
            assert all(store.get(i).state == "resolved" for i in squares)
        finally:
            for proc in (first, second):
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    # Every other.whoami ran on the worker that has it, and none failed anywhere.
    assert {r["pid"] for r in results.values()} == {second.pid}


def test_a_job_whose_kind_no_worker_has_waits_and_a_worker_with_it_runs_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    with open_store(url) as store:
        runtime = Runtime(store, registry=REGISTRY)
        # A server restarted with a typo in --jobs: it has every kind but this one.
        typo = worker(url, "tests.durable_jobs")
        try:
            until(lambda: any(w.alive for w in runtime.workers()), 60, "the worker is up")
            runtime.start(other_jobs.whoami, "late", id="waits")
            runtime.start(jobs.squares, 2, id="runs")
            until(lambda: settled(store, ["runs"]), 60, "the worker runs its own kinds")
            view = runtime.view("waits")
            assert view.promise.pending and view.task is not None and view.task.attempts == 0
            assert view.worker is not None and view.worker.kind == "other.whoami"
            assert not view.worker.alive and view.worker.last_seen is None
            fixed = worker(url, "tests.other_jobs")
            until(lambda: settled(store, ["waits"]), 60, "the job runs once its kind is there")
            assert Runtime.result(store.get("waits"))["pid"] == fixed.pid
            fixed.send_signal(signal.SIGTERM)
            fixed.wait(30)
            # Once that worker is gone, the kind was last seen when it stopped.
            seen = runtime.presence.availability(["other.whoami"], runtime.workers())
            assert not seen["other.whoami"].alive and seen["other.whoami"].last_seen is not None
        finally:
            typo.send_signal(signal.SIGTERM)
            typo.wait(30)
    assert os.path.exists(tmp_path / "k.db")


def test_a_job_whose_worker_died_says_it_waits_for_a_worker_with_its_kind(
    tmp_path: Path,
) -> None:
    # A worker dies (SIGKILL) mid-job; the server comes back without that job's module.
    # The job must not read "running" forever: it waits for a worker with its kind.
    from agent_tools.statuses import status_of

    url = f"sqlite:///{tmp_path}/k.db"
    log = tmp_path / "steps.log"
    with open_store(url) as store:
        runtime = Runtime(store, registry=REGISTRY)
        runtime.start(jobs.long_steps, 10_000, 0.01, id="long")
        env = {**os.environ, "DURABLE_TEST_LOG": str(log)}
        command = [sys.executable, "-m", "promises.worker", "--db", url,
                   "--jobs", "tests.durable_jobs", "--lease", "1"]  # fmt: skip
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        until(lambda: log.exists() and log.read_text().count("\n") >= 3, 60, "steps ran")
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        other = worker(url, "tests.other_jobs")
        try:

            def status() -> dict[str, object]:
                return status_of(runtime.view("long"), store.clock())

            waiting = until(lambda: (s := status())["status"] == "waiting" and s, 60,
                            "the job says it waits for a worker")  # fmt: skip
            assert waiting["waiting_for"]["worker"] == "tests.long_steps"  # type: ignore[index]
            assert "no running worker has the kind 'tests.long_steps'" in str(waiting)
        finally:
            other.send_signal(signal.SIGTERM)
            other.wait(30)
        runtime.cancel("long")
