"""MCP server figures; prints JSON.

(a) ``start_job`` calls per second through the SDK's in-memory client (no worker: the
    call and its durable write).
(b) ``start_job`` latency with 8 calls in flight (8 lean clients over streamable HTTP,
    each calling again as soon as it is answered). Target: p99 <= 20 ms. Again with 8
    connections of wrk: the Python clients spend about 1 ms of CPU a call on the same
    two CPUs as the server and the database, wrk almost none.
(c) 50 clients over streamable HTTP x 20 one-step jobs each, start to result, against
    ``agent-tools serve --http`` on SQLite and on PostgreSQL. Two ways an agent does it:
    ``start_job`` then ``await_result`` (two calls), and ``start_job`` with ``wait_s``
    (the answer carries the result: one call). Target: >= 500 jobs/s on SQLite, >= 300
    on PostgreSQL, p99 <= 250 ms, no errors. Measured three ways: with wrk (a load
    generator in C, ``apt-get install wrk``; each connection a 2026-07-28 client making
    its jobs with wait_s), which leaves the server the most of the two CPUs and so
    measures the server; with lean Python 2026-07-28 clients (one self-contained POST
    per call over keep-alive connections); and with the SDK's Python client. (b) and
    wrk's case again with the server kept on one CPU (``serve --cpu``).
(d) How long after a job completes ``await_result`` returns (p50/p99), with the worker
    in the server's process and in another process.
(e) The floor: the same clients against ``bench/floor.py``, an ``MCPServer`` of the
    official SDK whose ``start_job`` answers at once with no work (no store, no job),
    served the same way. What the SDK and uvicorn alone cost per call on this machine:
    a ceiling for any server built on them, to read (b) and (c) against.

The clients run on the same 2 CPUs as the server: their cost is part of every figure
(``server_cpu_ms_per_job`` is the server's own share).

    python bench/mcp.py [--calls 500] [--clients 50] [--jobs-per-client 20] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and this file would
# shadow the `mcp` package: look in the project root instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from agent_tools.cli import load_kinds  # noqa: E402
from agent_tools.server import build_server, worker_running  # noqa: E402
from bench.common import free_port, percentiles, served  # noqa: E402
from bench.jobs import pg_available, pg_schema  # noqa: E402
from promises import open_store  # noqa: E402

KIND = "bench.one_step"


#: The server process behind each URL, to read its CPU time.
SERVER_PIDS: dict[str, int] = {}


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def http_server(db: str, *extra: str) -> Iterator[str]:
    """``agent-tools serve --http`` on ``db`` with the bench's job kinds; yields its URL.
    ``$BENCH_SERVER_LOG`` keeps the server's log for a look afterwards."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "agent-tools"), "serve", "--http", "--port", str(port),
        "--db", db, "--jobs", "bench.jobs", "--concurrency", "64", *extra,
    ]  # fmt: skip
    log = os.environ.get("BENCH_SERVER_LOG")
    with served(command, port, env={"PYTHONPATH": str(ROOT)}, log_path=log) as proc:
        url = f"http://127.0.0.1:{port}/mcp"
        SERVER_PIDS[url] = proc.pid
        yield url


@contextlib.asynccontextmanager
async def http_client(url: str) -> AsyncIterator[Client]:
    async with (
        create_mcp_http_client() as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


async def call(client: Any, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error or result.structured_content is None:
        raise RuntimeError(f"{tool} failed: {result.content}")
    return result.structured_content


# -- (a) and (d): in memory -----------------------------------------------------------------


async def start_job_rate(path: Path, calls: int) -> dict[str, Any]:
    with open_store(f"sqlite:///{path}") as store:
        server = build_server(store, load_kinds([]))
        async with Client(server) as client:
            started = time.perf_counter()
            for _ in range(calls):
                await call(client, "start_job", {"kind": "sleep", "args": {"seconds": 3600}})
            elapsed = time.perf_counter() - started
    return {"calls": calls, "start_job_per_s": round(calls / elapsed, 1)}


async def completion_lag(path: Path, waits: int, *, worker_elsewhere: bool) -> dict[str, Any]:
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        server = build_server(store, load_kinds([]))
        service = server.service  # type: ignore[attr-defined]
        other = None
        if worker_elsewhere:
            other = subprocess.Popen(
                [str(Path(sys.executable).parent / "agent-tools"), "worker", "--db", str(path)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        lags = []
        try:
            async with contextlib.AsyncExitStack() as stack:
                if not worker_elsewhere:
                    await stack.enter_async_context(worker_running(service))
                client = await stack.enter_async_context(Client(server))
                for _ in range(waits):
                    started = await call(
                        client, "start_job", {"kind": "sleep", "args": {"seconds": 0.3}}
                    )
                    result = await call(
                        client, "await_result", {"job_ids": [started["job_id"]], "timeout_s": 30}
                    )
                    returned_ms = time.time() * 1000
                    if not result["done"]:
                        raise RuntimeError("job did not finish")
                    settled = await store.aget(started["job_id"])
                    lags.append((returned_ms - (settled.settled_at or 0)) / 1000)
        finally:
            if other is not None:
                other.terminate()
                other.wait()
    return {"jobs": waits, "await_result_return_after_completion": percentiles(lags)}


# -- (b) and (c): over HTTP -----------------------------------------------------------------


#: Calls each client makes before the ones that are measured.
WARM_UP = 10


async def start_latency_in_flight(url: str, in_flight: int, calls: int) -> dict[str, Any]:
    latencies: list[float] = []

    async def one_client() -> None:
        async with lean_client(url) as client:
            for n in range(WARM_UP + calls // in_flight):
                began = time.perf_counter()
                await call(client, "start_job", {"kind": "sleep", "args": {"seconds": 3600}})
                if n >= WARM_UP:  # the first calls of a fresh server fill its caches
                    latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(one_client() for _ in range(in_flight)))
    return {"in_flight": in_flight, "calls": len(latencies), **percentiles(latencies),
            "target": "p99 <= 20 ms"}  # fmt: skip


class LeanClient:
    """A 2026-07-28 client in a few lines: each call is one POST carrying its envelope
    (protocol version, capabilities) and the routing headers; the answer is JSON, or
    SSE when the server streamed it."""

    def __init__(self, http: Any, url: str) -> None:
        self.http, self.url, self.next_id = http, url, 0

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                "params": {"name": name, "arguments": arguments, "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}}}}  # fmt: skip
        headers = {"accept": "application/json, text/event-stream",
                   "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call",
                   "mcp-name": name}  # fmt: skip
        response = await self.http.post(self.url, json=body, headers=headers)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            messages = [json.loads(line[5:]) for line in response.text.splitlines()
                        if line.startswith("data:")]  # fmt: skip
            answer = next(m for m in messages if m.get("id") == self.next_id)
        else:
            answer = response.json()
        if "error" in answer:
            raise RuntimeError(f"{name}: {answer['error']}")
        return _Result(answer["result"])


class _Result:
    def __init__(self, result: dict[str, Any]) -> None:
        self.is_error = result.get("isError", False)
        self.structured_content = result.get("structuredContent")
        self.content = result.get("content")


@contextlib.asynccontextmanager
async def lean_client(url: str) -> AsyncIterator[LeanClient]:
    import httpx

    async with httpx.AsyncClient(timeout=60) as http:
        yield LeanClient(http, url)


async def many_clients(
    url: str, clients: int, per_client: int, *, inline: bool, lean: bool = False
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []

    async def one_client(n: int) -> None:
        async with lean_client(url) if lean else http_client(url) as client:
            for i in range(per_client):
                began = time.perf_counter()
                try:
                    args = {"kind": KIND, "args": {"i": n * per_client + i}}
                    if inline:
                        started = await call(client, "start_job", {**args, "wait_s": 30})
                        result = started.get("result") if started["status"] == "completed" else None
                        if started["status"] != "completed":  # not finished in time: rejoin
                            rejoin = {"job_ids": [started["job_id"]], "timeout_s": 30}
                            done = await call(client, "await_result", rejoin)
                            result = done["done"][0]["result"]
                    else:
                        started = await call(client, "start_job", args)
                        done = await call(
                            client,
                            "await_result",
                            {"job_ids": [started["job_id"]], "timeout_s": 30},
                        )
                        result = done["done"][0]["result"] if done["done"] else None
                    if result != n * per_client + i:
                        raise RuntimeError(f"wrong result {result!r}")
                    latencies.append(time.perf_counter() - began)
                except Exception as exc:  # counted, not fatal: the figure says how many
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])

    pid = SERVER_PIDS.get(url)
    cpu_before = cpu_seconds(pid)
    began = time.perf_counter()
    await asyncio.gather(*(one_client(n) for n in range(clients)))
    elapsed = time.perf_counter() - began
    cpu_after = cpu_seconds(pid)
    done = len(latencies)
    figures: dict[str, Any] = {
        "clients": clients,
        "jobs": clients * per_client,
        "jobs_per_s": round(done / elapsed, 1),
        **(percentiles(latencies) if latencies else {}),
        "errors": len(errors),
        "first_errors": errors[:3],
    }
    if cpu_before is not None and cpu_after is not None and done:
        # The server's own CPU per job (its calls, the job's run, the writes): with two
        # CPUs shared with the clients, this sets the ceiling on jobs per second.
        figures["server_cpu_ms_per_job"] = round((cpu_after - cpu_before) * 1000 / done, 2)
    return figures


#: wrk's script: each connection is a client calling start_job with ARGUMENTS (``made``
#: numbers the call), one call after another, as 2026-07-28 clients send them. Answers
#: without EXPECTED count as errors.
WRK_SCRIPT = r"""
made, bad = 0, 0  -- globals: done() reads each thread's with thread:get
local threads = {}
function setup(thread) table.insert(threads, thread) end
request = function()
  made = made + 1
  local body = '{"jsonrpc":"2.0","id":' .. made .. ',"method":"tools/call","params":{"name":'
    .. '"start_job","arguments":ARGUMENTS,'
    .. '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
    .. '"io.modelcontextprotocol/clientCapabilities":{}}}}'
  return wrk.format("POST", nil, {["Content-Type"]="application/json",
    ["Accept"]="application/json, text/event-stream", ["MCP-Protocol-Version"]="2026-07-28",
    ["Mcp-Method"]="tools/call", ["Mcp-Name"]="start_job"}, body)
end
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, 'EXPECTED', 1, true) then
    bad = bad + 1
  end
end
done = function(summary, latency, requests)
  local errors = 0
  for _, t in ipairs(threads) do errors = errors + t:get("bad") end
  local e = summary.errors
  io.write(string.format('{"jobs": %d, "seconds": %.3f, "p50_ms": %.1f, "p99_ms": %.1f, '
    .. '"max_ms": %.1f, "errors": %d}\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    errors + e.status + e.connect + e.read + e.write + e.timeout))
end
"""
#: One-step jobs with wait_s: one call per job, the answer carrying the result.
WRK_JOBS = ("""{"kind":"KIND","args":{"i":' .. made .. '},"wait_s":30}""".replace("KIND", KIND),
            '"status":"completed"')  # fmt: skip
#: (b)'s call: start a job that sleeps an hour; the answer carries its id.
WRK_STARTS = ('{"kind":"sleep","args":{"seconds":3600}}', '"job_id"')


def wrk_clients(
    url: str, clients: int, seconds: int, calls: tuple[str, str] = WRK_JOBS
) -> dict[str, Any]:
    """``clients`` connections of wrk (a load generator in C, Debian's ``wrk``), each a
    client making ``calls`` (``WRK_JOBS``: one-step jobs with ``start_job(wait_s=30)``)
    one after another for ``seconds``: the server's capacity, with the least of the two
    CPUs spent on clients."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    arguments, expected = calls
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.replace("ARGUMENTS", arguments).replace("EXPECTED", expected))
    try:
        pid = SERVER_PIDS.get(url)
        cpu_before = cpu_seconds(pid)
        done = subprocess.run(
            [wrk, f"-t{min(clients, 2)}", f"-c{clients}", f"-d{seconds}s", "--timeout", "60s",
             "-s", script.name, url],
            capture_output=True, text=True, timeout=seconds + 120, check=True,
        )  # fmt: skip
        cpu_after = cpu_seconds(pid)
    finally:
        os.unlink(script.name)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    jobs, took = figures.pop("jobs"), figures.pop("seconds")
    out = {"clients": clients, "seconds": seconds, "jobs": jobs,
           "jobs_per_s": round(jobs / took, 1), **figures}  # fmt: skip
    if cpu_before is not None and cpu_after is not None and jobs:
        out["server_cpu_ms_per_job"] = round((cpu_after - cpu_before) * 1000 / jobs, 2)
    return out


def starts_in_flight(url: str, args: Any) -> dict[str, Any]:
    """(b) twice: with 8 lean Python clients (they spend about 1 ms of CPU a call on the
    same two CPUs), and with 8 connections of wrk (about none)."""
    return {
        "start_job_8_in_flight": asyncio.run(start_latency_in_flight(url, 8, 800)),
        "start_job_8_in_flight_wrk": {
            **wrk_clients(url, 8, args.wrk_seconds, WRK_STARTS),
            "target": "p99 <= 20 ms",
        },
    }


def over_http(db: str, args: Any, target: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with http_server(db) as url:
        # First, on a fresh server: the latency of a start alone.
        out.update(starts_in_flight(url, args))
        figures = judged(wrk_clients(url, args.clients, args.wrk_seconds), target)
        out[f"{args.clients}_clients_wrk_start_with_wait_s"] = figures
        print(f"{db.split(':')[0]} wrk_start_with_wait_s: {json.dumps(figures)}", file=sys.stderr)
        for lean, inline in ((False, False), (False, True), (True, False), (True, True)):
            name = ("lean_" if lean else "sdk_") + (
                "start_with_wait_s" if inline else "start_then_await_result"
            )
            clients = many_clients(url, args.clients, args.jobs_per_client,
                                   inline=inline, lean=lean)  # fmt: skip
            figures = judged(asyncio.run(clients), target)
            out[f"{args.clients}_clients_{name}"] = figures
            print(f"{db.split(':')[0]} {name}: {json.dumps(figures)}", file=sys.stderr)
    out["pinned_to_one_cpu"] = pinned(db, args, target)  # alone on the database
    return out


def judged(figures: dict[str, Any], target: int) -> dict[str, Any]:
    """``figures`` with the MCP target and whether they meet it."""
    if "skipped" not in figures:
        figures["target"] = f">= {target} jobs/s, p99 <= 250 ms, no errors"
        figures["target_met"] = (
            figures["jobs_per_s"] >= target
            and figures.get("p99_ms", 1e9) <= 250
            and figures["errors"] == 0
        )
    return figures


def pinned(db: str, args: Any, target: int) -> dict[str, Any]:
    """(b) and the wrk case of (c) with the server kept on one CPU (``--cpu``)."""
    cpu = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if cpu is None:
        return {"skipped": "--cpu needs Linux"}
    with http_server(db, "--cpu", str(cpu)) as url:
        out: dict[str, Any] = {"cpu": cpu, **starts_in_flight(url, args)}
        figures = judged(wrk_clients(url, args.clients, args.wrk_seconds), target)
        out[f"{args.clients}_clients_wrk_start_with_wait_s"] = figures
    print(f"{db.split(':')[0]} pinned: {json.dumps(out)}", file=sys.stderr)
    return out


def floor(args: Any) -> dict[str, Any]:
    """(b) and the wrk case of (c) against the SDK's floor (``bench/floor.py``)."""
    port = free_port()
    command = [sys.executable, str(ROOT / "bench" / "floor.py"), "--port", str(port)]
    with served(command, port) as proc:
        url = f"http://127.0.0.1:{port}/mcp"
        SERVER_PIDS[url] = proc.pid
        out = starts_in_flight(url, args)
        out[f"{args.clients}_clients_wrk"] = wrk_clients(url, args.clients, args.wrk_seconds)
    print(f"floor: {json.dumps(out)}", file=sys.stderr)
    return out


def main() -> None:
    import logging

    for noisy in ("httpx", "httpx2"):  # a line per request of the SDK clients
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The clients' own full collections would add their pauses to the server's latency:
    # settle this process's heap as the server settles its own.
    from agent_tools.serving import settle_heap

    settle_heap()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--waits", type=int, default=50)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--jobs-per-client", type=int, default=20)
    parser.add_argument("--wrk-seconds", type=int, default=10, help="how long wrk's clients run")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--only", default="a,b,c,d,e")
    args = parser.parse_args()
    only = set(args.only.split(","))
    result: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as tmp:
        directory = Path(tmp)
        if "a" in only:
            result["a_start_job_in_memory"] = asyncio.run(
                start_job_rate(directory / "calls.db", args.calls)
            )
        if "b" in only or "c" in only:
            result["bc_http_sqlite"] = over_http(f"sqlite:///{directory}/http.db", args, 500)
            if not args.skip_postgres and pg_available():
                with pg_schema() as url:
                    result["bc_http_postgresql"] = over_http(url, args, 300)
        if "e" in only:
            result["e_sdk_floor"] = floor(args)
        if "d" in only:
            result["d_same_process_worker"] = asyncio.run(
                completion_lag(directory / "same.db", args.waits, worker_elsewhere=False)
            )
            result["d_worker_in_another_process"] = asyncio.run(
                completion_lag(directory / "other.db", args.waits, worker_elsewhere=True)
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
