"""Durable job figures on SQLite; prints JSON.

(a) Sequential one-step jobs per second, start to result, in one process, beside the
    same workload on DBOS (``pip install -e '.[bench]'``) with the same SQLite
    durability settings (WAL, synchronous=FULL), in the same run. Target: >= 5x DBOS.
(b) Start-to-completion latency of a no-op job, p50/p99.
(c) Time from restarting a worker to all 10,000 pending jobs done, after the worker
    running them was SIGKILLed mid-way.
(d) Resident memory of a worker holding 100,000 pending (sleeping) jobs, beside the
    same worker idle. Target: under 200 MB. (Set-up uses synchronous=NORMAL to load
    faster; memory does not depend on it.)

    python bench/jobs.py [--jobs 2000] [--resume 10000] [--sleeping 100000] [--skip-dbos]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from promises import Context, Runtime, Worker, durable, open_store  # noqa: E402


def noop_step(i: int) -> int:
    return i


@durable(name="bench.one_step")
async def one_step(ctx: Context, i: int) -> int:
    return int(await ctx.run(noop_step, i))


@durable(name="bench.sleep_long")
async def sleep_long(ctx: Context, i: int) -> int:
    await ctx.sleep(86_400)
    return i


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000, 3),
    }


async def ours_sequential(path: Path, n: int) -> dict[str, Any]:
    with open_store(f"sqlite:///{path}") as store:
        runtime = Runtime(store)
        worker = Worker(runtime, concurrency=16)
        running = asyncio.create_task(worker.run())
        latencies = []
        started = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            job = await asyncio.to_thread(runtime.start, one_step, i)
            done = await store.wait(job.promise.id, timeout=30)
            if done.state != "resolved":
                raise RuntimeError(f"job {i} ended {done.state}")
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        worker.stop()
        await running
    return {"jobs": n, "jobs_per_s": round(n / elapsed, 1), "latency": percentiles(latencies)}


def dbos_sequential(path: Path, n: int) -> dict[str, Any]:
    from dbos import DBOS

    conn = sqlite3.connect(path)  # WAL is a property of the file; FULL is SQLite's default
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    DBOS(config={"name": "bench", "system_database_url": f"sqlite:///{path}"})

    @DBOS.step()
    def dbos_step(i: int) -> int:
        return i

    @DBOS.workflow()
    def dbos_one_step(i: int) -> int:
        return dbos_step(i)

    DBOS.launch()
    try:
        latencies = []
        started = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            if DBOS.start_workflow(dbos_one_step, i).get_result() != i:
                raise RuntimeError("DBOS returned a wrong result")
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    finally:
        DBOS.destroy()
    return {"jobs": n, "jobs_per_s": round(n / elapsed, 1), "latency": percentiles(latencies)}


def worker_process(url: str, concurrency: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "promises.worker", "--db", url, "--jobs", "bench.jobs",
         "--concurrency", str(concurrency), "--poll-interval", "0.1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def count_pending(url: str, pattern: str) -> int:
    with open_store(url) as store:
        total, cursor = 0, None
        while True:
            page = store.search(pattern, state="pending", limit=1000, cursor=cursor)
            total += len(page.promises)
            if page.cursor is None:
                return total
            cursor = page.cursor


def resume_after_kill(path: Path, n: int) -> dict[str, Any]:
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        runtime = Runtime(store)
        for i in range(n):
            runtime.start(one_step, i, id=f"r-{i}")
    first = worker_process(url, 64)
    time.sleep(3.0)
    first.send_signal(signal.SIGKILL)
    first.wait()
    pending = count_pending(url, "r-*")
    started = time.perf_counter()
    second = worker_process(url, 64)
    while count_pending(url, "r-*"):
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    second.terminate()
    second.wait()
    return {"jobs": n, "pending_at_kill": pending, "restart_to_all_done_s": round(elapsed, 2)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


def memory_with_sleepers(path: Path, n: int) -> dict[str, Any]:
    url = f"sqlite:///{path}?synchronous=NORMAL"
    idle = worker_process(url, 256)
    time.sleep(3.0)
    idle_rss = rss_mb(idle.pid)
    with open_store(url) as store:
        runtime = Runtime(store)
        for base in range(0, n, 1000):
            with store.transaction() as conn:
                for i in range(base, min(base + 1000, n)):
                    runtime.start_in(conn, sleep_long, [i], {}, id=f"s-{i}")
    started = time.perf_counter()
    with open_store(url) as store:
        while True:  # every job is asleep (its task waits on its timer) or has settled
            with store.read() as conn:
                busy = conn.execute(
                    text("SELECT count(*) FROM tasks WHERE state != 'done' AND waiting_on IS NULL")
                ).scalar()
            if busy == 0:
                break
            time.sleep(1.0)
        with store.read() as conn:
            failed = conn.execute(text("SELECT count(*) FROM tasks WHERE state = 'done'")).scalar()
    setup_s = time.perf_counter() - started
    time.sleep(2.0)
    loaded_rss = rss_mb(idle.pid)
    idle.terminate()
    idle.wait()
    return {
        "sleeping_jobs": n - int(failed or 0),
        "jobs_that_ended_instead_of_sleeping": failed,
        "worker_rss_idle_mb": idle_rss,
        "worker_rss_with_sleepers_mb": loaded_rss,
        "target_under_200mb": loaded_rss < 200,
        "time_to_put_all_to_sleep_s": round(setup_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--resume", type=int, default=10_000)
    parser.add_argument("--sleeping", type=int, default=100_000)
    parser.add_argument("--skip-dbos", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        directory = Path(tmp)
        ours = asyncio.run(ours_sequential(directory / "ours.db", args.jobs)) if args.jobs else None
        result["a_sequential_one_step_jobs"] = {"agent_tools": ours}
        if ours is not None and not args.skip_dbos:
            theirs = dbos_sequential(directory / "dbos.db", args.jobs)
            result["a_sequential_one_step_jobs"]["dbos"] = theirs
            ratio = ours["jobs_per_s"] / theirs["jobs_per_s"]
            result["a_sequential_one_step_jobs"]["ratio_vs_dbos"] = round(ratio, 2)
            result["a_sequential_one_step_jobs"]["target_5x_met"] = ratio >= 5
        result["b_noop_job_latency"] = ours["latency"] if ours else None
        if args.resume:
            result["c_resume_after_sigkill"] = resume_after_kill(
                directory / "resume.db", args.resume
            )
        if args.sleeping:
            result["d_memory"] = memory_with_sleepers(directory / "sleep.db", args.sleeping)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
