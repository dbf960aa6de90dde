"""The weather story: start a gathering job through the MCP server, kill the server
mid-way (SIGKILL), restart it, and rejoin the result by its job id.

    python examples/weather/story.py --offline     # a local stand-in for Open-Meteo
    python examples/weather/story.py               # the real archive API (needs the network)

The server's log goes to stderr, so you see what it does. Set OPEN_METEO_ARCHIVE_URL to
point at another archive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from mcp import Client

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
PLACES = [
    {"name": "Lisbon", "latitude": 38.72, "longitude": -9.14},
    {"name": "Oslo", "latitude": 59.91, "longitude": 10.75},
    {"name": "Nairobi", "latitude": -1.29, "longitude": 36.82},
]
MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04"]
AGENT_TOOLS = str(Path(sys.executable).parent / "agent-tools")


def start_server(db: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [AGENT_TOOLS, "serve", "--http", "--port", str(port), "--db", db,
               "--jobs", "examples.weather.jobs"]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=env)  # its log goes to our stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited at start (status {server.returncode}); see above")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not start within 30 s; see its log above")


async def call(url: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    async with Client(url) as client:
        result = await client.call_tool(tool, args)
        if result.is_error:
            raise SystemExit(f"{tool} failed: {result.content}")
        return result.structured_content or {}


def reachable(url: str) -> str | None:
    """None if the archive answers, else why not."""
    try:
        httpx.get(
            url,
            timeout=5,
            params={
                "latitude": 0,
                "longitude": 0,
                "daily": "precipitation_sum",
                "start_date": "2025-01-01",
                "end_date": "2025-01-01",
            },
        )
        return None
    except httpx.TransportError as exc:
        return f"{type(exc).__name__}: {exc}"


async def story(db: str, port: int, env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{port}/mcp"
    server = start_server(db, port, env)
    job = await call(
        url,
        "start_job",
        {"kind": "weather.gather", "args": {"locations": PLACES, "months": MONTHS}},
    )
    print(f"started {job['job_id']} ({job['status']})", flush=True)
    await asyncio.sleep(1.0)
    server.send_signal(signal.SIGKILL)
    server.wait()
    print("server killed mid-way (SIGKILL)", flush=True)
    server = start_server(db, port, env)
    print("server restarted; rejoining by job id", flush=True)
    try:
        while True:
            waited = await call(url, "await_result", {"job_ids": [job["job_id"]], "timeout_s": 20})
            if waited["done"]:
                break
            pending = waited["pending"][0]
            progress = (pending.get("progress") or {}).get("message", "")
            retry = (pending.get("waiting_for") or {}).get("reason")
            print(f"still {pending['status']}: {retry or progress}", flush=True)
        done = waited["done"][0]
        if done["status"] != "completed":
            raise SystemExit(f"the job {done['status']}: {done.get('error')}")
        print(f"{done['status']}: {json.dumps(done['result']['summary'], sort_keys=True)}")
    finally:
        server.terminate()
        server.wait()


@contextlib.contextmanager
def archive(offline: bool) -> Iterator[dict[str, str]]:
    """The environment for the server: where the archive is."""
    if not offline:
        yield dict(os.environ)
        return
    from examples.fakes import FakeOpenMeteo

    with FakeOpenMeteo(slow={"59.": 2.0}) as fake:  # Oslo is slow: the kill interrupts it
        print(f"offline: a local Open-Meteo stand-in at {fake.url}", flush=True)
        yield {**os.environ, "OPEN_METEO_ARCHIVE_URL": fake.url}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--db",
        default=str(Path(tempfile.mkdtemp()) / "weather.db"),
        help="the database (default: a new one in a temporary directory)",
    )
    parser.add_argument("--port", type=int, default=8766, help="the server's port (default 8766)")
    parser.add_argument(
        "--offline", action="store_true", help="use a local stand-in for the Open-Meteo archive"
    )
    args = parser.parse_args()  # fmt: skip
    with archive(args.offline) as env:
        target = env.get("OPEN_METEO_ARCHIVE_URL", "https://archive-api.open-meteo.com/v1/archive")
        problem = None if args.offline else reachable(target)
        if problem is not None:
            raise SystemExit(
                f"cannot reach the Open-Meteo archive at {target} ({problem}).\n"
                "Run the story offline instead: python examples/weather/story.py --offline"
            )
        asyncio.run(story(args.db, args.port, env))


if __name__ == "__main__":
    main()
