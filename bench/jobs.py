"""Durable job figures beside DBOS, in the same run, on the same databases; prints JSON.

Ours go from start to result with ``Runtime.astart_and_wait``, DBOS's with
``start_workflow(...).get_result()``.

(a) Sequential one-step jobs, start to result, in one process (SQLite WAL+FULL, and
    PostgreSQL). Target: >= 2x DBOS.
(b) 16 concurrent submitters, 2,000 one-step jobs, start to result (our submitters are
    16 asyncio tasks, DBOS's 16 threads). Target: >= 5x DBOS on SQLite, >= 3x on
    PostgreSQL.
(c) A worker SIGKILLed with 10,000 jobs pending: restart to all done. Target: <= 10 s.
    Again with the restarted worker kept on one CPU (as `worker --cpu` keeps it). With
    the longest pause between two jobs ending: a long one is a wait, not slowness.
(d) Resident memory of a worker holding 100,000 sleeping jobs. Target: <= 150 MB.
(e) An idle worker: statements per second and write transactions in 10 s. Target:
    <= 2 statements/s, no write transaction.

DBOS (``pip install -e '.[bench]'``) runs with the same durability: its SQLite file in
WAL mode with synchronous=FULL (SQLite's default), and the same PostgreSQL server.

    python bench/jobs.py [--jobs 2000] [--resume 10000] [--sleeping 100000]
                         [--skip-dbos] [--skip-postgres] [--only a,b,c,d,e]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from promises import Context, Runtime, Worker, durable, open_store  # noqa: E402

PG = os.environ.get("AGENT_TOOLS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


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


# -- databases ----------------------------------------------------------------------------


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema on the PostgreSQL server; yields the store URL."""
    import psycopg

    name = "bench_" + uuid.uuid4().hex[:8]
    dsn = PG.replace("+psycopg", "")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{PG}?options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh database on the PostgreSQL server (DBOS keeps its own schema in it)."""
    import psycopg

    name = "bench_dbos_" + uuid.uuid4().hex[:8]
    dsn = PG.replace("+psycopg", "")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG.replace("+psycopg", ""), connect_timeout=3):
            return True
    except Exception as exc:
        print(f"PostgreSQL unavailable ({exc}); SQLite figures only", file=sys.stderr)
        return False


# -- ours ---------------------------------------------------------------------------------


async def ours(url: str, jobs: int, submitters: int) -> dict[str, Any]:
    """``submitters`` tasks, each starting one-step jobs and awaiting each result."""
    with open_store(url) as store:
        runtime = Runtime(store)
        worker = Worker(runtime, concurrency=max(16, submitters))
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.3)  # the worker is up
        latencies: list[float] = []

        async def submit(first: int) -> None:
            for i in range(first, jobs, submitters):
                started = time.perf_counter()
                _, done = await runtime.astart_and_wait(one_step, i, wait_s=60)
                if done.state != "resolved" or Runtime.result(done) != i:
                    raise RuntimeError(f"job {i} ended {done.state}")
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(submit(k) for k in range(submitters)))
        elapsed = time.perf_counter() - began
        worker.stop()
        await running
    return {"jobs": jobs, "jobs_per_s": round(jobs / elapsed, 1), **percentiles(latencies)}


# -- DBOS, in a subprocess (DBOS is a process-wide singleton) ------------------------------

DBOS_RUN = """
import json, sqlite3, sys, threading, time
from dbos import DBOS
url, jobs, submitters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if url.startswith("sqlite:///"):
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    conn.execute("PRAGMA journal_mode=WAL")  # a property of the file; FULL is the default
    conn.close()
DBOS(config={"name": "bench", "system_database_url": url})

@DBOS.step()
def dbos_step(i):
    return i

@DBOS.workflow()
def dbos_one_step(i):
    return dbos_step(i)

DBOS.launch()
latencies = []
def submit(first):
    for i in range(first, jobs, submitters):
        t = time.perf_counter()
        if DBOS.start_workflow(dbos_one_step, i).get_result() != i:
            raise RuntimeError("DBOS returned a wrong result")
        latencies.append(time.perf_counter() - t)
began = time.perf_counter()
threads = [threading.Thread(target=submit, args=(k,)) for k in range(submitters)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.perf_counter() - began
DBOS.destroy()
print(json.dumps({"elapsed": elapsed, "latencies": latencies}))
"""


def dbos(url: str, jobs: int, submitters: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", DBOS_RUN, url, str(jobs), str(submitters)],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "jobs": jobs,
        "jobs_per_s": round(jobs / out["elapsed"], 1),
        **percentiles(out["latencies"]),
    }


def compare(
    name: str, ours_figures: dict[str, Any], theirs: dict[str, Any] | None, target: float
) -> dict[str, Any]:
    out: dict[str, Any] = {"agent_tools": ours_figures}
    if theirs is not None:
        ratio = ours_figures["jobs_per_s"] / theirs["jobs_per_s"]
        out.update(dbos=theirs, ratio_vs_dbos=round(ratio, 2), target=f">= {target}x",
                   target_met=ratio >= target)  # fmt: skip
    print(f"{name}: {json.dumps(out)}", file=sys.stderr)
    return out


def throughput(
    directory: Path, jobs: int, submitters: int, targets: tuple[float, float], args: Any
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    url = f"sqlite:///{directory}/ours-{submitters}.db"
    dbos_url = f"sqlite:///{directory}/dbos-{submitters}.db"
    mine = asyncio.run(ours(url, jobs, submitters))
    theirs = None if args.skip_dbos else dbos(dbos_url, jobs, submitters)
    result["sqlite"] = compare(f"sqlite x{submitters}", mine, theirs, targets[0])
    if not args.skip_postgres and pg_available():
        with pg_schema() as pg_url:
            mine = asyncio.run(ours(pg_url, jobs, submitters))
        theirs = None
        if not args.skip_dbos:
            with pg_database() as dbos_pg:
                theirs = dbos(dbos_pg, jobs, submitters)
        result["postgresql"] = compare(f"postgresql x{submitters}", mine, theirs, targets[1])
    return result


# -- crash, memory, idle ------------------------------------------------------------------


def worker_process(url: str, concurrency: int, cpu: int | None = None) -> subprocess.Popen[bytes]:
    """A worker on ``url``; kept on ``cpu`` if given, as ``worker --cpu`` keeps it."""
    pin = [] if cpu is None else ["taskset", "-c", str(cpu)]
    return subprocess.Popen(
        [*pin, sys.executable, "-m", "promises.worker", "--db", url, "--jobs", "bench.jobs",
         "--concurrency", str(concurrency)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def pending_jobs(store: Any) -> int:
    return int(
        store.db.read(lambda tx: tx.scalar("SELECT count(*) FROM tasks WHERE state <> 'done'"))
    )


def resume_after_kill(path: Path, n: int, cpu: int | None = None) -> dict[str, Any]:
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        runtime = Runtime(store)
        batch = [runtime.prepare(one_step, [i], {}, id=f"r-{i}") for i in range(n)]
        store.db.write(lambda tx: [runtime.start_tx(tx, request) for request in batch])
        first = worker_process(url, 64)
        while pending_jobs(store) > n * 0.9:  # kill it once it is well into the work
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        pending = pending_jobs(store)
        killed_at = store.clock()
        started = time.perf_counter()
        second = worker_process(url, 64, cpu)
        while pending_jobs(store):
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        second.terminate()
        second.wait()
        # When each job ended: a long gap would be a wait (a poll, a lease), not speed.
        ended = store.db.read(lambda tx: tx.all(
            "SELECT updated_at FROM tasks WHERE updated_at > :t ORDER BY updated_at",
            {"t": killed_at}))  # fmt: skip
    times = [killed_at] + [row[0] for row in ended]
    return {
        "jobs": n,
        "pending_at_kill": pending,
        "restart_to_all_done_s": round(elapsed, 2),
        "longest_pause_between_jobs_ending_s": round(
            max(b - a for a, b in itertools.pairwise(times)) / 1000, 2
        ),
        "target": "<= 10 s",
        "target_met": elapsed <= 10,
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


def memory_with_sleepers(path: Path, n: int) -> dict[str, Any]:
    url = f"sqlite:///{path}?synchronous=NORMAL"  # quicker to load; memory does not care
    worker = worker_process(url, 256)
    with open_store(url) as store:
        time.sleep(2.0)
        idle_rss = rss_mb(worker.pid)
        runtime = Runtime(store)
        started = time.perf_counter()
        for base in range(0, n, 5000):
            batch = [
                runtime.prepare(sleep_long, [i], {}, id=f"s-{i}")
                for i in range(base, min(base + 5000, n))
            ]
            store.db.write(lambda tx, b=batch: [runtime.start_tx(tx, r) for r in b])
        asleep = "SELECT count(*) FROM tasks WHERE waiting_on IS NOT NULL AND state = 'ready'"
        while store.db.read(lambda tx: tx.scalar(asleep)) < n:
            time.sleep(0.5)
        setup_s = time.perf_counter() - started
        time.sleep(2.0)
        loaded_rss = rss_mb(worker.pid)
    worker.terminate()
    worker.wait()
    return {
        "sleeping_jobs": n,
        "worker_rss_idle_mb": idle_rss,
        "worker_rss_with_sleepers_mb": loaded_rss,
        "target": "<= 150 MB",
        "target_met": loaded_rss <= 150,
        "time_to_put_all_to_sleep_s": round(setup_s, 1),
    }


def idle(url: str, seconds: float = 10.0) -> dict[str, Any]:
    """Statements an idle worker sends (every connection of the store counted)."""
    counts = {"statements": 0, "write_transactions": 0}
    lock = threading.Lock()

    def seen(statement: str) -> None:
        with lock:
            counts["statements"] += 1
            if statement.lstrip().upper().startswith(("BEGIN IMMEDIATE", "INSERT", "UPDATE")):
                counts["write_transactions"] += 1

    store = open_store(url)
    connect = store.backend.connect

    class Cursor:
        def __init__(self, cursor: Any) -> None:
            self._cursor = cursor

        def execute(self, query: Any, *a: Any, **k: Any) -> Any:
            seen(str(query))
            return self._cursor.execute(query, *a, **k)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cursor, name)

    class Connection:
        def __init__(self, conn: Any) -> None:
            self._conn = conn

        def execute(self, query: Any, *a: Any, **k: Any) -> Any:
            seen(str(query))
            return self._conn.execute(query, *a, **k)

        def cursor(self, *a: Any, **k: Any) -> Cursor:
            return Cursor(self._conn.cursor(*a, **k))

        def commit(self) -> None:
            seen("COMMIT")
            self._conn.commit()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: Any) -> None:
            self._conn.close()

    def counted(role: str = "reader", **kw: Any) -> Any:
        conn = connect(role, **kw)
        if store.backend.name == "sqlite":
            conn.set_trace_callback(seen)
            return conn
        return Connection(conn)

    object.__setattr__(store.backend, "connect", counted)
    measured: dict[str, int] = {}

    async def run() -> None:
        worker = Worker(Runtime(store))
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(3.0)  # start-up writes (its registration) are not idle
        with lock:
            counts["statements"] = counts["write_transactions"] = 0
        await asyncio.sleep(seconds)
        with lock:
            measured.update(counts)
        worker.stop()
        await task

    asyncio.run(run())
    store.close()
    per_s = measured["statements"] / seconds
    return {
        "seconds": seconds,
        "statements_per_s": round(per_s, 2),
        "write_transactions": measured["write_transactions"],
        "target": "<= 2 statements/s, no write",
        "target_met": per_s <= 2 and measured["write_transactions"] == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--resume", type=int, default=10_000)
    parser.add_argument("--sleeping", type=int, default=100_000)
    parser.add_argument("--skip-dbos", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--only", default="a,b,c,d,e")
    args = parser.parse_args()
    only = set(args.only.split(","))
    result: dict[str, Any] = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
                              "cpus": os.cpu_count()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        directory = Path(tmp)
        if "a" in only:
            result["a_sequential"] = throughput(directory, args.jobs, 1, (2, 2), args)
        if "b" in only:
            result["b_16_submitters"] = throughput(directory, args.jobs, 16, (5, 3), args)
        if "c" in only and args.resume:
            result["c_resume_after_sigkill"] = resume_after_kill(directory / "r.db", args.resume)
            if shutil.which("taskset") and hasattr(os, "sched_getaffinity"):
                cpu = max(os.sched_getaffinity(0))
                result["c_resume_after_sigkill_pinned"] = {
                    "cpu": cpu,
                    **resume_after_kill(directory / "r-pinned.db", args.resume, cpu),
                }
        if "d" in only and args.sleeping:
            result["d_memory"] = memory_with_sleepers(directory / "s.db", args.sleeping)
        if "e" in only:
            result["e_idle"] = {"sqlite": idle(f"sqlite:///{directory}/idle.db")}
            if not args.skip_postgres and pg_available():
                with pg_schema() as url:
                    result["e_idle"]["postgresql"] = idle(url)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
