"""MCP server figures on SQLite; prints JSON.

1. ``start_job`` calls per second through the SDK's in-memory client (no worker, so
   only the call and its durable write are measured).
2. How long after a job completes ``await_result`` returns, p50/p99: with the worker in
   the server's process (woken at once) and in another process (seen by polling).

    python bench/mcp.py [--calls 500] [--waits 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and this file would
# shadow the `mcp` package: look in the project root instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from mcp import Client  # noqa: E402

from agent_tools.cli import load_kinds  # noqa: E402
from agent_tools.server import build_server, worker_running  # noqa: E402
from promises import open_store  # noqa: E402


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)], 1),
    }


async def start_job_rate(path: Path, calls: int) -> dict[str, Any]:
    with open_store(f"sqlite:///{path}") as store:
        server = build_server(store, load_kinds([]))
        async with Client(server) as client:
            started = time.perf_counter()
            for _ in range(calls):
                result = await client.call_tool(
                    "start_job", {"kind": "sleep", "args": {"seconds": 3600}}
                )
                if result.is_error:
                    raise RuntimeError(result.content)
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
                [sys.executable, "-m", "agent_tools.cli", "worker", "--db", str(path)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        lags = []
        try:
            async with Client(server) as client:
                local = worker_running(service) if not worker_elsewhere else None
                if local is not None:
                    await local.__aenter__()
                for _ in range(waits):
                    started = await client.call_tool(
                        "start_job", {"kind": "sleep", "args": {"seconds": 0.3}}
                    )
                    job_id = (started.structured_content or {})["job_id"]
                    result = await client.call_tool(
                        "await_result", {"job_ids": [job_id], "timeout_s": 30}
                    )
                    returned_ms = time.time() * 1000
                    done = (result.structured_content or {})["done"]
                    if not done:
                        raise RuntimeError("job did not finish")
                    settled_ms = store.get(job_id).settled_at or 0
                    lags.append(returned_ms - settled_ms)
                if local is not None:
                    await local.__aexit__(None, None, None)
        finally:
            if other is not None:
                other.terminate()
                other.wait()
    return {"jobs": waits, "await_result_return_after_completion": percentiles(lags)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--waits", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as tmp:
        directory = Path(tmp)
        result = {
            "start_job_in_memory": asyncio.run(start_job_rate(directory / "calls.db", args.calls)),
            "same_process_worker": asyncio.run(
                completion_lag(directory / "same.db", args.waits, worker_elsewhere=False)
            ),
            "worker_in_another_process": asyncio.run(
                completion_lag(directory / "other.db", args.waits, worker_elsewhere=True)
            ),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
