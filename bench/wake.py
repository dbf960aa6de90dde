"""How soon another process's work is seen (issue 9, item 3); prints JSON.

(a) settle_to_wait: a promise is resolved by a bare store in another process; from
    that resolve returning to ``store.wait`` returning here.
(b) job_to_wait: a one-step job run by a worker in another process; from the job's
    settle (its ``settled_at``, ms) to ``store.wait`` returning here.

Both on SQLite (WAL, synchronous=FULL) and on PostgreSQL (if reachable). Target:
p50 <= 20 ms and p99 <= 60 ms. The waiters' poll interval is set to 30 s, so every
wake-up measured comes from the change feed.

    python bench/wake.py [--rounds 200] [--pg postgresql+psycopg://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.jobs import one_step, percentiles  # noqa: E402
from promises import Runtime, open_store  # noqa: E402

SETTLER = """
import sys, time
from promises import open_store
store = open_store(sys.argv[1])
for line in sys.stdin:
    store.resolve(line.strip())
    print(time.time(), flush=True)
"""


async def settle_to_wait(url: str, rounds: int) -> dict[str, Any]:
    settler = subprocess.Popen(
        [sys.executable, "-c", SETTLER, url], cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    samples = []
    assert settler.stdin is not None and settler.stdout is not None
    with open_store(url, poll_interval=30) as store:
        for i in range(rounds):
            pid = f"wake-{i}-{uuid.uuid4().hex[:6]}"
            await store.acreate(pid, timeout_at=store.clock() + 600_000)
            waiting = asyncio.create_task(store.wait(pid, timeout=20))
            await asyncio.sleep(0.01)  # the waiter is listening
            settler.stdin.write(pid + "\n")
            settler.stdin.flush()
            done = await waiting
            woke = time.time()
            settled = float(await asyncio.to_thread(settler.stdout.readline))
            if done.pending:
                raise RuntimeError("a wait timed out: the change feed missed a settle")
            samples.append(max(woke - settled, 0.0))
    settler.stdin.close()
    settler.wait(30)
    return {"rounds": rounds, **percentiles(samples)}


async def job_to_wait(url: str, rounds: int) -> dict[str, Any]:
    worker = subprocess.Popen(
        [sys.executable, "-m", "promises.worker", "--db", url, "--jobs", "bench.jobs"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    samples = []
    try:
        with open_store(url, poll_interval=30) as store:
            runtime = Runtime(store)  # no worker here: the other process runs the jobs
            for i in range(rounds):
                job = await runtime.astart(one_step, i)
                done = await store.wait(job.promise.id, timeout=30)
                woke = time.time() * 1000
                if done.pending or done.settled_at is None:
                    raise RuntimeError("a job did not finish in 30 s")
                samples.append(max(woke - done.settled_at, 0.0) / 1000)
    finally:
        worker.terminate()
        worker.wait(30)
    return {"rounds": rounds, **percentiles(samples)}


def pg_schema(base: str) -> tuple[str, str] | None:
    import psycopg

    name = "bench_" + uuid.uuid4().hex[:8]
    try:
        with psycopg.connect(base.replace("+psycopg", ""), autocommit=True, connect_timeout=3) as c:
            c.execute(f"CREATE SCHEMA {name}")
    except Exception as exc:
        print(f"PostgreSQL unavailable ({exc}); measuring SQLite only", file=sys.stderr)
        return None
    return name, f"{base}?options=-csearch_path%3D{name}"


def drop_schema(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base.replace("+psycopg", ""), autocommit=True) as c:
        c.execute(f"DROP SCHEMA {name} CASCADE")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "AGENT_TOOLS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1/test"
        ),
    )
    args = parser.parse_args()
    results: dict[str, Any] = {"target": {"p50_ms": 20, "p99_ms": 60}}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/wake.db"
        open_store(url).close()
        results["sqlite"] = {
            "settle_to_wait": await settle_to_wait(url, args.rounds),
            "job_to_wait": await job_to_wait(url, args.rounds),
        }
    schema = pg_schema(args.pg)
    if schema is not None:
        name, url = schema
        try:
            open_store(url).close()
            results["postgresql"] = {
                "settle_to_wait": await settle_to_wait(url, args.rounds),
                "job_to_wait": await job_to_wait(url, args.rounds),
            }
        finally:
            drop_schema(args.pg, name)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
