"""No blocking call on the event loop (issue 10): the runtime, the worker and the MCP
server run under blockbuster, which fails any call that blocks the loop (SQL through
the drivers, file and socket I/O, time.sleep) made from code in ``promises`` or
``agent_tools``. Everything blocking must go through the store's writer and readers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from mcp import Client

from agent_tools import builtin_jobs
from agent_tools.server import build_server, worker_running
from promises import Context, Runtime, SqlStore, Worker, durable, open_store
from tests import durable_jobs as jobs
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


@durable(name="tests.everything_async")
async def everything(ctx: Context, n: int) -> dict[str, Any]:
    """Steps, a sleep, a promise and progress: every path the runtime takes."""
    total = sum([await ctx.run(jobs.square, i) for i in range(n)])
    ctx.progress("half way", 0.5)
    await ctx.sleep(timedelta(milliseconds=10))
    when = await ctx.now()
    handle = ctx.promise(timeout=60)
    answer = await handle
    return {"total": total, "answer": answer, "year": when.year}


@pytest.fixture
def busted() -> Iterator[BlockBuster]:
    # Only calls made from our packages count; locks held for a few instructions by
    # another thread are not blocking I/O.
    with blockbuster_ctx(["promises", "agent_tools"]) as bb:
        for name in ("threading.Lock.acquire", "threading.Lock.acquire_lock"):
            bb.functions[name].deactivate()
        yield bb


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    with open_store(store_url) as s:
        yield s


async def test_the_runtime_and_its_worker_never_block_the_loop(
    store: SqlStore, busted: BlockBuster
) -> None:
    runtime = Runtime(store)
    worker = Worker(runtime, poll_interval=0.05)
    running = asyncio.create_task(worker.run())
    try:
        job = await runtime.astart(everything, 3)

        async def waits_for_its_promise() -> bool:
            view = (await runtime.aviews([job.promise.id]))[job.promise.id]
            return view.waited_on == f"{job.promise.id}.5"

        await eventually(waits_for_its_promise, what="the job waits for its promise")
        await store.asettle(f"{job.promise.id}.5", "resolve", value=None)
        done = await store.wait(job.promise.id, timeout=30)
        assert Runtime.result(done)["total"] == 0 + 1 + 4
        other = await runtime.astart(jobs.long_steps, 100, 0.01)
        await asyncio.to_thread(runtime.cancel, other.promise.id)
        cancelled = await store.wait(other.promise.id, timeout=30)
        assert cancelled.state == "rejected_canceled"
        waited = await store.wait_all([job.promise.id, other.promise.id], timeout=1)
        assert not any(p.pending for p in waited.values())
    finally:
        worker.stop()
        await running


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    kinds = {"approval": builtin_jobs.approval, "sleep": builtin_jobs.sleep,
             "tests.squares": jobs.squares}  # fmt: skip
    with open_store(f"sqlite:///{tmp_path}/mcp.db") as store:
        server = build_server(store, kinds)
        async with worker_running(server.service), Client(server) as connected:  # type: ignore[attr-defined]
            yield connected


async def test_the_mcp_tools_never_block_the_loop(client: Client, busted: BlockBuster) -> None:
    started = await client.call_tool("start_job", {"kind": "tests.squares", "args": {"n": 3}})
    assert not started.is_error, started
    job_id = started.structured_content["job_id"]  # type: ignore[index]
    for name, arguments in [
        ("probe_status", {"job_ids": [job_id]}),
        ("await_result", {"job_ids": [job_id], "timeout_s": 10}),
        ("list_jobs", {}),
        ("schedule", {"delay_s": 60}),
        ("schedule", {"cron": "0 9 * * 1-5", "kind": "sleep", "args": {"seconds": 1}}),
        ("start_sleep", {"seconds": 30, "wait_s": 1}),
        ("current_time", {}),
    ]:
        result = await client.call_tool(name, arguments)
        assert not result.is_error, (name, result)
    waiting = await client.call_tool("start_sleep", {"seconds": 60})
    cancelled = await client.call_tool(
        "cancel_job",
        {"job_id": waiting.structured_content["job_id"]},  # type: ignore[index]
    )
    assert not cancelled.is_error, cancelled


async def test_the_guard_catches_a_blocking_call(tmp_path: Path, busted: BlockBuster) -> None:
    """The check above can fail: a synchronous store read on the loop is caught. (It
    sees sqlite3, files and sockets; psycopg's calls go through C, but they are made
    from the same code paths, which the SQLite runs of the tests above cover.)"""
    store = await asyncio.to_thread(open_store, f"sqlite:///{tmp_path}/guard.db")
    from blockbuster import BlockingError

    await store.acreate("p", timeout_at=store.clock() + 60_000)
    with pytest.raises(BlockingError):
        store.get("p")
    await asyncio.to_thread(store.close)
