"""The weather story: start a gathering job through the MCP server, kill the server
mid-way (SIGKILL), restart it, and rejoin the result by its job id.

    python examples/weather/story.py [--db weather.db] [--port 8766]

Set OPEN_METEO_ARCHIVE_URL to point at another archive (the tests use a local one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp import Client

ROOT = Path(__file__).resolve().parent.parent.parent
PLACES = [
    {"name": "Lisbon", "latitude": 38.72, "longitude": -9.14},
    {"name": "Oslo", "latitude": 59.91, "longitude": 10.75},
    {"name": "Nairobi", "latitude": -1.29, "longitude": 36.82},
]
MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04"]


def start_server(db: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "agent_tools.cli", "serve", "--http", "--port", str(port),
               "--db", db, "--jobs", "examples.weather.jobs"]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


async def call(url: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    async with Client(url) as client:
        result = await client.call_tool(tool, args)
        if result.is_error:
            raise SystemExit(f"{tool} failed: {result.content}")
        return result.structured_content or {}


async def story(db: str, port: int) -> None:
    url = f"http://127.0.0.1:{port}/mcp"
    server = start_server(db, port)
    job = await call(
        url,
        "start_job",
        {"kind": "weather.gather", "args": {"locations": PLACES, "months": MONTHS}},
    )
    print(f"started {job['job_id']} ({job['status']})")
    await asyncio.sleep(1.0)
    server.send_signal(signal.SIGKILL)
    server.wait()
    print("server killed mid-way (SIGKILL)")
    server = start_server(db, port)
    print("server restarted; rejoining by job id")
    try:
        while True:
            waited = await call(url, "await_result", {"job_ids": [job["job_id"]], "timeout_s": 20})
            if waited["done"]:
                break
        done = waited["done"][0]
        print(f"{done['status']}: {json.dumps(done['result']['summary'], sort_keys=True)}")
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", default=str(Path(tempfile.mkdtemp()) / "weather.db"))
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    asyncio.run(story(args.db, args.port))


if __name__ == "__main__":
    main()
