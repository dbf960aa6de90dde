"""The official TypeScript SDK 1.32 client against ``agent-tools proxy``, over stdio (the
client starts the proxy, which starts tests/proxy_upstream.py) and over streamable HTTP
(``proxy --http``, its upstream over stdio): quick calls come back exactly as the
upstream gave them, a slow one answers with a job id that ``await_result`` redeems, the
call survives a SIGKILL of the proxy mid-call (re-issued under the same idempotency
key), and a task-augmented call (2025-11-25 core tasks) gets the upstream's answer
through ``tasks/result``.

The client script is tests/interop/proxy_client.mjs; the clients are installed by
``npm_clients()`` and the tests skip only where the npm registry is unreachable.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import ROOT, Script, npm_clients
from tests.servers import Listening
from tests.waiting import until

pytestmark = pytest.mark.slow
UPSTREAM = [sys.executable, str(ROOT / "tests" / "proxy_upstream.py")]
AGENT_TOOLS = str(Path(sys.executable).parent / "agent-tools")
INLINE_WAIT_S = 1
SLOW_S = 3  # well above the inline wait: the call goes to the background


@dataclass
class Proxy:
    """``agent-tools proxy`` on a fresh database as the client reaches it, over one
    transport; the upstream's marks (what it saw) in a file."""

    transport: str
    tmp: Path
    http: Listening | None = None
    direct_http: Listening | None = field(default=None, init=False)

    @property
    def db(self) -> Path:
        return self.tmp / "proxy.db"

    @property
    def marks_file(self) -> Path:
        return self.tmp / "marks.jsonl"

    def argv(self, *serving: str) -> list[str]:
        return [
            AGENT_TOOLS,
            "proxy",
            "--db",
            str(self.db),
            "--inline-wait",
            str(INLINE_WAIT_S),
            *serving,
            "--",
            *UPSTREAM,
        ]

    def scenario(self, *steps: dict[str, Any], tasks: bool = False) -> dict[str, Any]:
        if self.http is not None:
            return {"transport": "http", "url": self.http.url, "tasks": tasks, "steps": steps}
        # The TS SDK passes a spawned server only a few variables (PATH, HOME...): the
        # marks file goes through a script, which execs so its pid is the proxy's.
        script = self.tmp / "proxy.sh"
        command = " ".join(shlex.quote(a) for a in self.argv("--no-ui"))
        script.write_text(
            f"cd {shlex.quote(str(ROOT))}\n"
            f"exec env UPSTREAM_MARKS={shlex.quote(str(self.marks_file))} {command}\n"
        )
        return {
            "transport": "stdio",
            "command": ["sh", str(script)],
            "tasks": tasks,
            "steps": steps,
        }

    def direct(self, *steps: dict[str, Any]) -> dict[str, Any]:
        """A scenario against the upstream itself, over the same transport."""
        if self.transport == "http":
            upstream = Listening(lambda port: [*UPSTREAM, "--http", str(port)],
                                 self.tmp / "upstream.stderr")  # fmt: skip
            upstream.start()
            self.direct_http = upstream
            return {"transport": "http", "url": upstream.url, "steps": steps}
        return {"transport": "stdio", "command": UPSTREAM, "steps": steps}

    def marks(self) -> list[dict[str, Any]]:
        if not self.marks_file.exists():
            return []
        lines = self.marks_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def kill(self, client: Script) -> None:
        """SIGKILL the proxy (over stdio: the one ``client`` started)."""
        if self.http is not None:
            self.http.kill()
        else:
            os.kill(client.until("server")["pid"], signal.SIGKILL)

    def restart(self) -> None:
        """After a kill: over HTTP the proxy starts again; a stdio client starts its own."""
        if self.http is not None:
            self.http.start()

    def close(self) -> None:
        for server in (self.http, self.direct_http):
            if server is not None:
                server.stop()


@pytest.fixture(scope="module")
def clients() -> Path:
    return npm_clients()


@pytest.fixture(autouse=True)
def no_client_left_running() -> Iterator[None]:
    yield
    while Script.started:
        Script.started.pop().stop()


@pytest.fixture(params=["stdio", "http"])
def proxy(request: pytest.FixtureRequest, tmp_path: Path, clients: Path) -> Iterator[Proxy]:
    target = Proxy(request.param, tmp_path)
    if request.param == "http":
        target.http = Listening(
            lambda _: target.argv("--http", "--port", "0"),  # a new port on each start
            tmp_path / "proxy.stderr",
            {"UPSTREAM_MARKS": str(target.marks_file)},
        )
        target.http.start()
    yield target
    target.close()


def run(scenario: dict[str, Any], *wanted: str) -> list[dict[str, Any]]:
    """Run a client scenario to its end; the events named ``wanted``, in order."""
    client = Script.client("proxy_client.mjs", scenario)
    events = [client.until(name) for name in wanted]
    client.until("finished")
    assert client.finish() == 0, client.stderr[-2000:]
    return events


FAST_CALLS = [
    {"do": "call", "name": "echo", "args": {"text": "héllo, proxy"}},
    {"do": "call", "name": "weather", "args": {"city": "Oslo"}},
    {"do": "call", "name": "fail", "args": {"reason": "no such city"}},
]


def test_quick_calls_answer_inline_exactly_as_the_upstream_gives_them(proxy: Proxy) -> None:
    listed, *direct = run(proxy.direct({"do": "list"}, *FAST_CALLS), "listed", *["answer"] * 3)
    weather_schema = next(t for t in listed["tools"] if t["name"] == "weather")["outputSchema"]
    # Straight from the upstream the SDK checked weather against its output schema.
    assert [a.get("thrown") for a in direct] == [None, None, None]
    assert direct[1]["result"]["structuredContent"] == {"city": "Oslo", "celsius": 21.5}

    calls = [
        dict(c, outputSchema=weather_schema) if c["name"] == "weather" else c for c in FAST_CALLS
    ]
    listed, *proxied = run(proxy.scenario({"do": "list"}, *calls), "listed", *["answer"] * 3)
    tools = {t["name"]: t for t in listed["tools"]}
    assert {"echo", "slow", "fail", "steps", "weather", "await_result"} <= set(tools)
    # Served without the upstream's output schema (a background answer has another shape).
    assert "outputSchema" not in tools["weather"]
    assert [a.get("thrown") for a in proxied] == [None, None, None]
    assert [a["result"] for a in proxied] == [a["result"] for a in direct]
    assert proxied[0]["result"]["content"] == [{"type": "text", "text": "echo: héllo, proxy"}]
    assert proxied[1]["schemaCheck"]["valid"] is True, proxied[1]["schemaCheck"]
    assert proxied[2]["result"]["isError"] is True
    assert [(m["event"], m["tool"]) for m in proxy.marks()] == [
        ("start", "echo"),
        ("start", "weather"),
        ("start", "fail"),
    ]


def test_a_slow_call_answers_with_a_job_id_that_await_result_redeems(proxy: Proxy) -> None:
    call = {"do": "call", "name": "slow", "args": {"seconds": SLOW_S, "label": "report"}}
    answer, awaited = run(proxy.scenario(call, {"do": "await"}), "answer", "awaited")
    result = answer["result"]
    assert result["isError"] is False
    body = result["structuredContent"]
    assert set(body) == {"job_id", "status", "tool", "message"}
    assert body["tool"] == "slow" and body["status"] in ("running", "waiting")
    assert body["job_id"] in result["content"][0]["text"]
    job = awaited["job"]
    assert job["job_id"] == body["job_id"] and job["status"] == "completed"
    assert job["result"] == {
        "content": [{"type": "text", "text": "slow done: report"}],
        "structuredContent": {"result": "slow done: report"},
        "isError": False,
    }
    assert [m["key"] for m in proxy.marks() if m["event"] == "start"] == [body["job_id"]]


def test_a_call_in_flight_when_the_proxy_is_sigkilled_is_reissued_and_rejoined(
    proxy: Proxy,
) -> None:
    call = {"do": "call", "name": "slow", "args": {"seconds": SLOW_S, "label": "survivor"}}
    first = Script.client("proxy_client.mjs", proxy.scenario(call))

    def started() -> list[dict[str, Any]]:
        return [m for m in proxy.marks() if m["event"] == "start" and m["tool"] == "slow"]

    key = until(started, what="the upstream got the slow call")[0]["key"]
    assert not [m for m in proxy.marks() if m["event"] == "done"]  # still in flight
    proxy.kill(first)
    first.stop()  # its call failed, or it had the job id: either way, a new session
    proxy.restart()

    found, awaited = run(proxy.scenario({"do": "find"}, {"do": "await"}), "found", "awaited")
    assert [j["job_id"] for j in found["jobs"]] == [key]  # the job id is the key sent
    job = awaited["job"]
    assert job["status"] == "completed"
    assert job["result"]["content"] == [{"type": "text", "text": "slow done: survivor"}]
    starts = started()
    assert [m["key"] for m in starts] == [key, key], starts
    assert starts[0]["pid"] != starts[1]["pid"]  # a new upstream, under the new proxy


def test_a_task_augmented_call_gets_a_task_whose_result_is_the_upstreams(proxy: Proxy) -> None:
    task = {"do": "task", "name": "slow", "args": {"seconds": SLOW_S, "label": "as a task"}}
    listed, created, settled = run(
        proxy.scenario({"do": "list"}, task, tasks=True), "listed", "task", "taskResult"
    )
    assert listed["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
    slow = next(t for t in listed["tools"] if t["name"] == "slow")
    assert slow["execution"]["taskSupport"] in ("optional", "required")
    assert created["task"]["status"] == "working"
    result = settled["result"]
    assert result["content"] == [{"type": "text", "text": "slow done: as a task"}]
    assert result["structuredContent"] == {"result": "slow done: as a task"}
    assert result["isError"] is False
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": created["taskId"]}


def test_a_task_augmented_call_to_a_quick_tool_still_gets_a_task(proxy: Proxy) -> None:
    task = {"do": "task", "name": "echo", "args": {"text": "quick"}}
    # (the SDK sends a task only for a tool it has listed as taking one)
    created, settled = run(proxy.scenario({"do": "list"}, task, tasks=True), "task", "taskResult")
    assert created["task"]["status"] in ("working", "completed")
    assert settled["result"]["content"] == [{"type": "text", "text": "echo: quick"}]


def test_an_upstream_that_crashes_mid_call_fails_that_call_and_the_next_one_works(
    proxy: Proxy,
) -> None:
    crash = {"do": "call", "name": "crash", "args": {}}
    # The next call may wait for the restarted upstream past the inline wait: redeemed.
    echo = {"do": "call", "name": "echo", "args": {"text": "after"}, "redeem": True}
    crashed, echoed = run(proxy.scenario(crash, echo), "answer", "answer")
    assert crashed["result"]["isError"] is True, crashed
    assert "went away during the call" in crashed["result"]["content"][0]["text"]
    assert echoed["result"]["content"] == [{"type": "text", "text": "echo: after"}]
    pids = {m["pid"] for m in proxy.marks() if m["event"] == "start"}
    assert len(pids) == 2  # the crashed upstream was replaced


def test_cancel_job_cancels_a_proxied_call_upstream(proxy: Proxy) -> None:
    call = {"do": "call", "name": "slow", "args": {"seconds": 600, "label": "doomed"}}
    answer, cancelled = run(proxy.scenario(call, {"do": "cancel"}), "answer", "cancelled")
    assert answer["result"]["structuredContent"]["status"] in ("running", "waiting")
    assert cancelled["result"]["structuredContent"]["status"] == "cancelled"
    until(lambda: [m for m in proxy.marks() if m["event"] == "cancelled"],
          what="the upstream hears the call was cancelled")  # fmt: skip


def test_fifty_calls_at_once_through_the_proxy_all_come_back(proxy: Proxy) -> None:
    many = {"do": "many", "name": "echo", "args": [{"text": f"n{i}"} for i in range(50)]}
    (answers,) = run(proxy.scenario(many), "many")
    texts = sorted(r["content"][0]["text"] for r in answers["results"])
    assert texts == sorted(f"echo: n{i}" for i in range(50))
    assert len({m["key"] for m in proxy.marks() if m["event"] == "start"}) == 50
