"""The server as clients meet it: a real subprocess over stdio and over HTTP, the HTTP
safety checks, and rejoining jobs after the server is SIGKILLed and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.servers import listening_port
from tests.waiting import eventually

ROOT = Path(__file__).parent.parent
pytestmark = [pytest.mark.anyio, pytest.mark.slow]
TOKEN = "s3cret-token-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command(db: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agent_tools.cli",
        "serve",
        "--db",
        str(db),
        "--jobs",
        "tests.durable_jobs",
        *extra,
    ]


class HttpServer:
    def __init__(self, db: Path, log: Path, port: int) -> None:
        self.db, self.log, self.port = db, log, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.errors = db.with_suffix(".stderr")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        """Start the server: on a port of its choosing the first time (``port`` 0), on
        the same port again after a kill, so clients find it where it was."""
        logged_before = self.errors.read_text() if self.errors.exists() else ""
        with self.errors.open("ab") as errors:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                serve_command(self.db, "--http", "--port", str(self.port), "--token", TOKEN),
                cwd=ROOT,
                env={**os.environ, "DURABLE_TEST_LOG": str(self.log)},
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        self.port = listening_port(self.proc, self.errors, logged_before)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    @contextlib.asynccontextmanager
    async def client(self, *extensions: Any) -> AsyncIterator[Client]:
        # The caller owns the HTTP client the transport uses: close it too.
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            create_mcp_http_client(headers=headers) as http,
            Client(
                streamable_http_client(self.url, http_client=http), extensions=list(extensions)
            ) as client,
        ):
            yield client


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(tmp_path / "http.db", tmp_path / "steps.log", 0)
    server.start()
    yield server
    server.stop()


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    return result.structured_content or {}


async def exercise_every_tool(client: Client) -> None:
    names = {t.name for t in (await client.list_tools()).tools}
    assert {
        "start_job",
        "probe_status",
        "await_result",
        "schedule",
        "list_jobs",
        "cancel_job",
        "start_tests_squares",
    } <= names
    job = await call(client, "start_job", {"kind": "tests.squares", "args": {"n": 3}})
    assert (await call(client, "probe_status", {"job_ids": [job["job_id"]]}))["jobs"][0][
        "job_id"
    ] == job["job_id"]
    done = await call(client, "await_result", {"job_ids": [job["job_id"]], "timeout_s": 20})
    assert done["done"][0]["result"] == [0, 1, 4]
    timer = await call(client, "schedule", {"delay_s": 0.2})
    assert (await call(client, "await_result", {"job_ids": [timer["id"]], "timeout_s": 20}))["done"]
    assert job["job_id"] in {j["job_id"] for j in (await call(client, "list_jobs", {}))["jobs"]}
    sleeper = await call(client, "start_job", {"kind": "sleep", "args": {"seconds": 600}})
    assert (await call(client, "cancel_job", {"job_id": sleeper["job_id"]}))[
        "status"
    ] == "cancelled"
    bad = await client.call_tool("start_job", {"kind": "nope"})
    assert bad.is_error and "unknown job kind 'nope'" in bad.content[0].text  # type: ignore[union-attr]


async def test_every_tool_over_stdio(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=serve_command(tmp_path / "stdio.db")[1:], cwd=str(ROOT)
    )
    async with Client(params) as client:
        await exercise_every_tool(client)


async def test_every_tool_over_http(http_server: HttpServer) -> None:
    async with http_server.client() as client:
        await exercise_every_tool(client)


def test_http_refuses_a_missing_or_wrong_token_and_a_foreign_origin(
    http_server: HttpServer,
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    assert httpx.post(http_server.url, json=body, headers=headers).status_code == 401
    wrong = {**headers, "Authorization": "Bearer guess"}
    response = httpx.post(http_server.url, json=body, headers=wrong)
    assert response.status_code == 401 and "Authorization: Bearer" in response.text
    foreign = {**headers, "Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
    assert httpx.post(http_server.url, json=body, headers=foreign).status_code == 403
    rebound = {**headers, "Authorization": f"Bearer {TOKEN}", "Host": "evil.example"}
    assert httpx.post(http_server.url, json=body, headers=rebound).status_code == 421
    huge = (
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"x": "'
        + b"x" * 5_000_000
        + b'"}}'
    )
    authorized = {**headers, "Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(http_server.url, content=huge, headers=authorized).status_code == 413


def test_serving_beyond_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        serve_command(tmp_path / "x.db", "--http", "--host", "0.0.0.0", "--port", str(free_port())),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "AGENT_TOOLS_TOKEN"},
    )
    assert result.returncode == 2
    assert (
        "refusing to serve on 0.0.0.0 without a token" in result.stderr
        and "--token" in result.stderr
    )


def long_steps_done(log: Path, job_ids: list[str]) -> int:
    """How many steps of these jobs the log says have finished."""
    if not log.exists():
        return 0
    steps = (json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip())
    return sum(1 for step in steps if step.rsplit(".", 1)[0] in job_ids)


async def test_jobs_are_rejoined_after_the_server_is_sigkilled_and_restarted(
    http_server: HttpServer,
) -> None:
    async with http_server.client() as client:
        ids = [
            (
                await call(
                    client,
                    "start_job",
                    {"kind": "tests.long_steps", "args": {"n": 15, "pause": 0.1}},
                )
            )["job_id"]
            for _ in range(3)
        ]
        lost = await call(client, "start_job", {"kind": "tests.squares", "args": {"n": 2}})
    # Kill it mid-job: once the long jobs have finished a few steps (an observed event).
    await eventually(lambda: long_steps_done(http_server.log, ids) >= 3)
    killed = http_server.proc.pid  # type: ignore[union-attr]
    http_server.kill()
    http_server.start()
    async with http_server.client() as client:
        probe = await call(client, "probe_status", {"job_ids": ids})
        assert {j["status"] for j in probe["jobs"]} <= {"running", "waiting", "completed"}
        done = await call(client, "await_result", {"job_ids": ids, "timeout_s": 40})
        assert (
            done["pending"] == []
            and [j["result"] for j in done["done"]] == [sum(i * i for i in range(15))] * 3
        )
        # A client that lost its ids finds them again.
        found = {j["job_id"] for j in (await call(client, "list_jobs", {"limit": 50}))["jobs"]}
        assert {*ids, lost["job_id"]} <= found
    runs: dict[str, list[int]] = {}
    for line in http_server.log.read_text().splitlines():
        entry = json.loads(line)
        runs.setdefault(entry["step"], []).append(entry["pid"])
    assert len(runs) == 3 * 15 + 2
    # Nothing ran twice, except a step the kill interrupted (its first run was in the killed process).
    assert all(len(pids) == 1 or (len(pids) == 2 and pids[0] == killed) for pids in runs.values())


async def test_tasks_get_answers_for_an_old_task_after_a_sigkill_and_restart(
    http_server: HttpServer,
) -> None:
    from tests.tasks_client import TasksClient, get_task, start_task

    async with http_server.client(TasksClient()) as client:
        handle = await start_task(client, "start_tests_long_steps", {"n": 12, "pause": 0.1})
        assert (await get_task(client, handle.task_id))["status"] == "working"
    # Kill it mid-job: once the job has finished a few steps (an observed event).
    await eventually(
        lambda: http_server.log.exists() and len(http_server.log.read_text().splitlines()) >= 3
    )
    http_server.kill()
    http_server.start()
    async with http_server.client(TasksClient()) as client:

        async def finished() -> dict[str, Any] | None:
            task = await get_task(client, handle.task_id)
            return task if task["status"] != "working" else None

        task = await eventually(finished, timeout=60)
    assert task["status"] == "completed"
    assert task["result"]["structuredContent"]["result"] == sum(i * i for i in range(12))


async def test_a_python_client_over_stdio_rejoins_its_task_and_job_after_a_sigkill(
    tmp_path: Path,
) -> None:
    """The Python client spawns the server; SIGKILL it mid-job; a new connection (a new
    server process on the same store) rejoins the plain job and the 2026-07-28 task."""
    from tests.interop.harness import StdioServer, assert_no_finished_step_ran_again, wait_for_steps
    from tests.tasks_client import TasksClient, get_task, start_task

    server = StdioServer(tmp_path / "py-stdio.db", tmp_path / "steps.log")
    command, *args = server.command()
    params = StdioServerParameters(command=command, args=args, cwd=str(ROOT))
    with contextlib.suppress(Exception):  # the connection dies with the server
        async with Client(params, extensions=[TasksClient()]) as client:
            # Both calls answer with tasks (the client declared the extension); one job
            # has an id we chose, to rejoin it with the plain tools.
            await start_task(
                client, "start_tests_long_steps", {"n": 8, "pause": 0.15, "job_id": "py-plain"}
            )
            task = await start_task(client, "start_tests_long_steps", {"n": 8, "pause": 0.15})
            await asyncio.to_thread(wait_for_steps, server.steps_log, 3)
            server.kill()
            await client.list_tools()  # fails: the server is gone
    async with Client(params, extensions=[TasksClient()]) as client:
        done = await call(client, "await_result", {"job_ids": ["py-plain"], "timeout_s": 40})
        assert done["done"][0]["result"] == sum(i * i for i in range(8))

        async def finished() -> dict[str, Any] | None:
            state = await get_task(client, task.task_id)
            return state if state["status"] != "working" else None

        state = await eventually(finished, what="the task is no longer working")
    assert state["status"] == "completed"
    assert state["result"]["structuredContent"]["result"] == sum(i * i for i in range(8))
    assert_no_finished_step_ran_again(server.steps_log, restarts=2)
