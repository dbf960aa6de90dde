"""Crash recovery with real worker processes killed with SIGKILL.

Workers are ``python -m promises.worker`` subprocesses running ``tests.durable_jobs``;
every step execution is logged (step id, pid, wall-clock start) so the tests can count
what ran, where and when.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from promises import SqlStore, open_store
from promises.codec import StoredError
from promises.runtime import Runtime
from tests import durable_jobs as jobs
from tests.waiting import until

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


class Workers:
    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()

    def start(self, concurrency: int = 8, **env: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "promises.worker", "--db", self.url]
        command += ["--jobs", "tests.durable_jobs"]
        command += ["--concurrency", str(concurrency)]
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "DURABLE_TEST_LOG": str(self.log), **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.killed.add(proc.pid)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(20)

    def entries(self) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def workers(tmp_path: Path) -> object:
    made: list[Workers] = []

    def make(url: str) -> Workers:
        w = Workers(url, tmp_path / "steps.log")
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop_all()


def wait_settled(store: SqlStore, ids: list[str], timeout: float) -> None:
    until(
        lambda: not any(p.pending for p in store.get_many(ids).values()),
        timeout,
        what=f"jobs {ids} settle",
    )


def test_jobs_survive_random_sigkills_with_completed_steps_never_run_again(
    tmp_path: Path, workers: object
) -> None:
    url = f"sqlite:///{tmp_path}/crash.db"
    rng = random.Random(20261121)
    with open_store(url) as store:
        runtime = Runtime(store)
        ids = [f"job-{i}" for i in range(12)]
        total_steps = sum(6 + i % 3 for i in range(12))
        for i, job_id in enumerate(ids):
            runtime.start(jobs.squares, 6 + i % 3, 0.03, id=job_id)
        w = workers(url)  # type: ignore[operator]
        kills_mid_work = 0
        for _ in range(6):
            # Kill each worker after it has run a random number of steps: an observed
            # event, so the kills land mid-work on a fast machine and a slow one alike.
            before = len(w.entries())
            if before >= total_steps:
                break
            proc = w.start()
            target = min(before + rng.randint(1, 8), total_steps)
            until(lambda t=target: len(w.entries()) >= t, what="steps ran")  # type: ignore[misc]
            if any(p.pending for p in store.get_many(ids).values()):
                kills_mid_work += 1
            w.kill(proc)
        w.start()
        wait_settled(store, ids, timeout=120)

        # Same results as a run without crashes.
        for i, job_id in enumerate(ids):
            assert Runtime.result(store.get(job_id)) == [k * k for k in range(6 + i % 3)]
        # A step that completed before a kill never ran again: every execution of it
        # started before its checkpoint was written.
        runs: dict[str, list[dict[str, object]]] = defaultdict(list)
        for entry in w.entries():
            runs[str(entry["step"])].append(entry)
        for step_id, executions in runs.items():
            settled_at = store.get(step_id).settled_at
            assert settled_at is not None
            assert all(int(e["start"]) <= settled_at for e in executions), step_id  # type: ignore[call-overload]
            # Only a killed process may have left a run whose result was not recorded.
            assert all(e["pid"] in w.killed for e in executions[:-1]), step_id
        assert len(runs) == total_steps
        assert kills_mid_work >= 3, "the test must actually kill workers while jobs run"


def test_a_job_sleeping_across_a_crash_wakes_at_its_time(tmp_path: Path, workers: object) -> None:
    url = f"sqlite:///{tmp_path}/sleep.db"
    with open_store(url) as store:
        Runtime(store).start(jobs.sleeper, 3.0, id="nap")
        w = workers(url)  # type: ignore[operator]
        proc = w.start()
        until(lambda: store.search("nap.1").promises, what="the job sleeps")
        w.kill(proc)
        timer = store.get("nap.1")
        w.start()
        wait_settled(store, ["nap"], timeout=30)
        result = Runtime.result(store.get("nap"))
    assert result["after"] >= timer.timeout_at  # not before its time
    assert result["after"] - timer.timeout_at < 2_000  # and soon after (restart included)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_several_worker_processes_run_every_job_once(
    tmp_path: Path, workers: object, backend: str, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path}/multi.db"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with open_store(url) as store:
        runtime = Runtime(store)
        ids = [f"m-{i}" for i in range(30)]
        w = workers(url)  # type: ignore[operator]
        for _ in range(3):
            w.start(concurrency=4)
        for job_id in ids:  # ~0.4 s a job: one worker alone would need 3 s
            runtime.start(jobs.squares, 4, 0.1, id=job_id)
        wait_settled(store, ids, timeout=90)
        for job_id in ids:
            assert Runtime.result(store.get(job_id)) == [0, 1, 4, 9]
    by_step: dict[str, list[object]] = defaultdict(list)
    pids_by_job: dict[str, set[object]] = defaultdict(set)
    for entry in w.entries():
        by_step[str(entry["step"])].append(entry["pid"])
        pids_by_job[str(entry["step"]).split(".")[0]].add(entry["pid"])
    assert len(by_step) == 120 and all(len(p) == 1 for p in by_step.values())
    assert all(len(p) == 1 for p in pids_by_job.values())  # no job ran on two workers
    assert len({pid for p in pids_by_job.values() for pid in p}) >= 2  # the work was shared


def test_changing_a_step_between_crash_and_restart_fails_with_the_replay_error(
    tmp_path: Path, workers: object
) -> None:
    url = f"sqlite:///{tmp_path}/change.db"
    with open_store(url) as store:
        Runtime(store).start(jobs.changing, id="chg")
        w = workers(url)  # type: ignore[operator]
        proc = w.start(CHANGING_SLEEP="2")
        until(lambda: store.search("chg.1").promises, what="the job sleeps")
        w.kill(proc)
        w.start(CHANGED="1", CHANGING_SLEEP="2")
        wait_settled(store, ["chg"], timeout=30)
        with pytest.raises(StoredError) as failed:
            Runtime.result(store.get("chg"))
    assert failed.value.type == "NonDeterministicReplay"
    assert "step chg.0 was 'tests.durable_jobs:step_a'" in failed.value.message
    assert "'tests.durable_jobs:step_b' now" in failed.value.message
