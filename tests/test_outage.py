"""A store outage never fails a job, on PostgreSQL too (issue 9, item 6).

Worker processes run jobs while the test terminates every one of their database
connections (``pg_terminate_backend``, found by their application_name), again and
again, each time after more steps have run. Every job must still complete with the
right result, and every worker must still be running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from promises import Runtime, open_store
from tests import durable_jobs as jobs
from tests.conftest import PG_URL, requires_postgres
from tests.waiting import until

ROOT = Path(__file__).parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def terminate(prefix: str) -> int:
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE %s AND pid <> pg_backend_pid()",
            (prefix + ":%",),
        ).fetchall()
    return len(rows)


def steps_logged(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@requires_postgres
def test_jobs_survive_their_workers_connections_being_terminated(
    pg_url: str, tmp_path: Path
) -> None:
    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "steps.log"
    url = f"{pg_url}&application_name={prefix}"
    command = [sys.executable, "-m", "promises.worker", "--db", url]
    command += ["--jobs", "tests.durable_jobs", "--concurrency", "8"]
    env = {**os.environ, "DURABLE_TEST_LOG": str(log)}
    workers = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for _ in range(2)
    ]
    ids = [f"o-{i}" for i in range(60)]
    try:
        with open_store(pg_url) as store:
            runtime = Runtime(store)
            for job_id in ids:
                runtime.start(jobs.squares, 4, 0.01, id=job_id)
            terminated = 0
            for round_ in range(1, 6):
                # Strike after more steps ran: observed progress, not a guessed moment.
                until(lambda r=round_: steps_logged(log) >= 30 * r, 120, "steps ran")  # type: ignore[misc]
                terminated += terminate(prefix)
            until(
                lambda: not any(p.pending for p in store.get_many(ids).values()),
                180,
                "every job settles",
            )
            outcomes = {i: store.get(i) for i in ids}
        assert terminated >= 5, "the test must actually cut the workers off"
        failed = {i: p.value.data for i, p in outcomes.items() if p.state != "resolved"}
        assert failed == {}
        assert all(Runtime.result(p) == [0, 1, 4, 9] for p in outcomes.values())
        assert all(w.poll() is None for w in workers), "a worker exited on a store error"
        steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
        assert set(steps) == {f"{i}.{k}" for i in ids for k in range(4)}
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
