"""The weather story: start a gathering job through the MCP server, kill the server
mid-way (SIGKILL), restart it, and rejoin the result by its job id.

    python examples/weather/story.py --offline     # a local stand-in for Open-Meteo
    python examples/weather/story.py               # the real archive API (needs the network)

The server's log goes to stderr, each line marked [server 1] or [server 2], so you see
what it does. The server listens on a free port (--port to choose one) and the story
talks only to the server it started. Set OPEN_METEO_ARCHIVE_URL to point at another
archive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from mcp import Client

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from examples.processes import Server  # noqa: E402  (found through the path just set)

PLACES = [
    {"name": "Lisbon", "latitude": 38.72, "longitude": -9.14},
    {"name": "Oslo", "latitude": 59.91, "longitude": 10.75},
    {"name": "Nairobi", "latitude": -1.29, "longitude": 36.82},
]
MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04"]
JOBS = "examples.weather.jobs"


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


async def story(db: Path, port: int, env: dict[str, str]) -> None:
    server = Server(db, port, JOBS, env, name="server 1")
    try:
        job = await call(
            server.url,
            "start_job",
            {"kind": "weather.gather", "args": {"locations": PLACES, "months": MONTHS}},
        )
        print(f"started {job['job_id']} ({job['status']}) on {server.url}", flush=True)
        await asyncio.sleep(1.0)
        server.kill()
        print("server killed mid-way (SIGKILL)", flush=True)
        server = Server(db, server.port, JOBS, env, name="server 2")
        print("server restarted; rejoining by job id", flush=True)
        while True:
            waited = await call(
                server.url, "await_result", {"job_ids": [job["job_id"]], "timeout_s": 20}
            )
            if waited["done"]:
                break
            pending = waited["pending"][0]
            progress = (pending.get("progress") or {}).get("message", "")
            retry = (pending.get("waiting_for") or {}).get("reason")
            print(f"still {pending['status']}: {retry or progress}", flush=True)
    finally:
        server.stop()
    done = waited["done"][0]
    if done["status"] != "completed":
        raise SystemExit(f"the job {done['status']}: {done.get('error')}")
    places = sorted(done["result"]["summary"].items())
    print("completed: " + "; ".join(
        f"{name} {stats['mean_max_c']} °C mean high, {stats['precipitation_mm']} mm rain"
        for name, stats in places
    ) + f" ({len(MONTHS)} months each)")  # fmt: skip


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
        "--db", type=Path, help="the database (default: a new one in a temporary directory)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="the server's port (default: a free one)"
    )
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
        db = args.db or Path(tempfile.mkdtemp()) / "weather.db"
        asyncio.run(story(db, args.port, env))


if __name__ == "__main__":
    main()
