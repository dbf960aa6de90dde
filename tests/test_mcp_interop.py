"""The official MCP clients people use, from npm, against a real ``agent-tools serve``
over HTTP and stdio: the MCP Inspector 2.12 CLI (``--strict`` too), the TypeScript
SDK 1.32 client with and without tasks (2025-11-25), and ``@modelcontextprotocol/
ext-tasks`` 0.2.2 on ``@modelcontextprotocol/client`` 2.4 (both task shapes) — each
with a SIGKILL of the server mid-job, after which the same ids still answer.

The clients are pinned in tests/interop/package-lock.json and installed by the tests
(``npm ci``) when missing; the tests skip only where the npm registry is unreachable.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import (
    BIN,
    ROOT,
    Script,
    StdioServer,
    assert_no_finished_step_ran_again,
    node_env,
    npm_clients,
    wait_for_steps,
)
from tests.test_mcp_transports import TOKEN, HttpServer

pytestmark = pytest.mark.slow
STEPS = 10
LONG_JOB = {"n": STEPS, "pause": 0.15}
LONG_RESULT = sum(i * i for i in range(STEPS))


@dataclass
class Target:
    """One server as the clients see it, over one transport, and how to kill it."""

    transport: str
    steps_log: Path
    http: HttpServer | None = None
    stdio: StdioServer | None = None

    def scenario(self, worker: bool = True, **extra: Any) -> dict[str, Any]:
        """A client scenario. ``worker=False``: a stdio server that records jobs only, so
        the server killed later is the one running them."""
        if self.http is not None:
            return {"transport": "http", "url": self.http.url, "token": TOKEN, **extra}
        assert self.stdio is not None
        return {"transport": "stdio", "command": self.stdio.command(worker), **extra}

    def inspector_target(self, worker: bool = True) -> list[str]:
        if self.http is not None:
            return [self.http.url, "--header", f"Authorization: Bearer {TOKEN}"]
        assert self.stdio is not None
        return self.stdio.command(worker)

    def inspector(
        self, *args: str, worker: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "inspector"), "--cli", *self.inspector_target(worker), *args],
            cwd=ROOT,
            env=node_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def kill(self) -> None:
        if self.http is not None:
            self.http.kill()
        else:
            assert self.stdio is not None
            self.stdio.kill()

    def restart(self) -> None:
        """After a kill: an HTTP server is started again; a stdio client spawns its own."""
        if self.http is not None:
            self.http.start()


@pytest.fixture(scope="module")
def clients() -> Path:
    return npm_clients()


@pytest.fixture(autouse=True)
def no_client_left_running() -> Iterator[None]:
    yield
    while Script.started:
        Script.started.pop().stop()


@pytest.fixture(params=["http", "stdio"])
def target(request: pytest.FixtureRequest, tmp_path: Path, clients: Path) -> Iterator[Target]:
    steps_log = tmp_path / "steps.log"
    if request.param == "stdio":
        yield Target("stdio", steps_log, stdio=StdioServer(tmp_path / "stdio.db", steps_log))
        return
    server = HttpServer(tmp_path / "http.db", steps_log, 0)
    server.start()
    yield Target("http", steps_log, http=server)
    server.stop()


def inspector_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The result the Inspector printed (``--format json`` wraps it in ``result``)."""
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    return dict(json.loads(done.stdout)["result"])


# -- the MCP Inspector CLI --------------------------------------------------------------


def test_the_inspector_lists_every_tool_and_strict_mode_reports_nothing(target: Target) -> None:
    done = target.inspector("--strict", "--format", "json", "--method", "tools/list")
    tools = {t["name"]: t for t in inspector_json(done)["tools"]}
    assert {
        "start_job",
        "probe_status",
        "await_result",
        "schedule",
        "list_jobs",
        "cancel_job",
    } <= set(tools)
    findings = [
        line
        for line in done.stderr.splitlines()
        if line.startswith(("Error: tool", "Warning: tool"))
    ]
    assert findings == [], done.stderr[-3000:]


def test_the_inspector_starts_a_job_and_rejoins_it_after_a_sigkill(target: Target) -> None:
    job_id = f"inspector-{target.transport}"
    started = target.inspector(
        "--format", "json", "--method", "tools/call", "--tool-name", "start_tests_long_steps",
        "--tool-args-json", json.dumps({**LONG_JOB, "job_id": job_id}), worker=False,
    )  # fmt: skip
    body = inspector_json(started)
    assert body.get("isError") is not True, body
    assert body["structuredContent"]["job_id"] == job_id
    # A call in flight while the server dies (over stdio the Inspector sees its server
    # exit and fails; over HTTP it keeps waiting to resume the stream, so we stop it).
    waiting = Script.inspector(
        *target.inspector_target(), "--format", "json", "--method", "tools/call",
        "--tool-name", "await_result",
        "--tool-args-json", json.dumps({"job_ids": [job_id], "timeout_s": 40}),
    )  # fmt: skip
    wait_for_steps(target.steps_log, 3)
    target.kill()
    if target.stdio is not None:
        assert waiting.finish() != 0
    waiting.stop()
    target.restart()
    rejoined = inspector_json(
        target.inspector(
            "--format", "json", "--method", "tools/call", "--tool-name", "await_result",
            "--tool-args-json", json.dumps({"job_ids": [job_id], "timeout_s": 40}),
        )
    )  # fmt: skip
    assert rejoined["structuredContent"]["done"][0]["result"] == LONG_RESULT
    assert_no_finished_step_ran_again(target.steps_log, restarts=2)


def test_the_inspector_on_2026_07_28_gets_a_task_and_prints_its_result(target: Target) -> None:
    done = target.inspector(
        "--protocol-era", "modern", "--format", "json", "--method", "tools/call",
        "--tool-name", "start_tests_squares", "--tool-args-json", json.dumps({"n": 4}),
    )  # fmt: skip
    result = inspector_json(done)
    # A plain start answers `running` without a result: this came through the task it got.
    assert result["resultType"] == "complete" and result["isError"] is False
    assert result["structuredContent"]["result"] == [0, 1, 4, 9]
    strict = target.inspector("--strict", "--protocol-era", "modern", "--method", "tools/list")
    assert strict.returncode == 0 and "Error: tool" not in strict.stderr
    assert "Warning: tool" not in strict.stderr, strict.stderr[-2000:]


# -- the TypeScript SDK 1.32 client (2025-11-25) ---------------------------------------------


def test_the_typescript_sdk_without_tasks_gets_plain_tools_and_rejoins_after_a_sigkill(
    target: Target,
) -> None:
    listed = Script.client("sdk1_client.mjs", target.scenario(tasks=False, action="list"))
    info = listed.until("listed")
    assert info["server"]["name"] == "agent-tools" and info["server"]["version"]
    assert listed.finish() == 0
    call = Script.client(
        "sdk1_client.mjs",
        target.scenario(
            worker=False, tasks=False, action="call", tool="start_tests_long_steps", args=LONG_JOB
        ),
    )
    result = call.until("result")["result"]
    assert result["isError"] is False and result["structuredContent"]["status"] in (
        "running",
        "waiting",
    )
    job_id = result["structuredContent"]["job_id"]
    assert call.finish() == 0
    if target.stdio is not None:  # the stdio server of that call has exited: run the job on
        keep = Script.client(
            "sdk1_client.mjs", target.scenario(tasks=False, action="rejoin", jobId=job_id)
        )
        wait_for_steps(target.steps_log, 3)
        target.kill()
        keep.finish()
    else:
        wait_for_steps(target.steps_log, 3)
        target.kill()
    target.restart()
    rejoin = Script.client(
        "sdk1_client.mjs", target.scenario(tasks=False, action="rejoin", jobId=job_id)
    )
    done = rejoin.until("result", timeout=90)["result"]["structuredContent"]["done"][0]
    assert done["result"] == LONG_RESULT and rejoin.finish() == 0
    assert_no_finished_step_ran_again(target.steps_log, restarts=2)


def test_the_typescript_sdk_with_tasks_gets_a_core_task_that_survives_a_sigkill(
    target: Target,
) -> None:
    call = Script.client(
        "sdk1_client.mjs",
        target.scenario(tasks=True, action="call", tool="start_tests_long_steps", args=LONG_JOB),
    )
    started = call.until("started")
    assert started["task"]["status"] == "working" and started["task"]["ttl"] > 0
    wait_for_steps(target.steps_log, 3)
    target.kill()
    call.until("error")
    call.finish()
    target.restart()
    rejoin = Script.client(
        "sdk1_client.mjs", target.scenario(tasks=True, action="rejoin", taskId=started["taskId"])
    )
    result = rejoin.until("result", timeout=90)["result"]
    assert result["structuredContent"]["result"] == LONG_RESULT
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": started["taskId"]}
    assert rejoin.finish() == 0
    assert_no_finished_step_ran_again(target.steps_log, restarts=1)


EVERY_TOOL = [
    ["start_job", {"kind": "tests.squares", "args": {"n": 3}, "job_id": "a1", "wait_s": 20}],
    ["start_tests_fails", {"message": "nope", "wait_s": 20}],
    ["start_sleep", {"seconds": 600, "job_id": "s1"}],
    ["start_approval", {"question": "ok?", "job_id": "ap1"}],
    ["probe_status", {"job_ids": ["a1", "s1", "ap1", "zzz"]}],
    ["await_result", {"job_ids": ["a1", "s1"], "timeout_s": 0.5}],
    ["schedule", {"delay_s": 60, "id": "t1"}],
    ["schedule", {"cron": "0 9 * * 1-5", "kind": "sleep", "args": {"seconds": 1}, "id": "c1"}],
    ["probe_status", {"job_ids": ["t1", "c1"]}],
    ["list_jobs", {"status": "completed"}],
    ["list_jobs", {"type": "timer"}],
    ["list_jobs", {"type": "schedule"}],
    ["cancel_job", {"job_id": "c1"}],
    ["cancel_job", {"job_id": "s1"}],
    ["current_time", {"timezone": "Asia/Tokyo"}],
    ["start_sleep", {"seconds": 1, "bogus": 2}],
]


def test_every_tools_answers_pass_the_typescript_sdks_output_schema_checks(target: Target) -> None:
    run = Script.client(
        "sdk1_client.mjs", target.scenario(tasks=False, action="calls", calls=EVERY_TOOL)
    )
    answers = [run.until("answer") for _ in EVERY_TOOL]
    assert run.finish() == 0
    assert [
        a for a in answers if "thrown" in a
    ] == []  # the SDK refuses answers that break their schema
    assert [a["name"] for a in answers if a["isError"]] == ["start_sleep"]
    assert (
        answers[-1]["text"]
        == "start_sleep does not take 'bogus'; its arguments are: seconds, job_id, wait_s"
    )
    assert answers[0]["structuredContent"]["result"] == [0, 1, 4]
    assert answers[1]["structuredContent"]["error"] == {"type": "ValueError", "message": "nope"}
    assert {j["status"] for j in answers[8]["structuredContent"]["jobs"]} == {"waiting"}


def test_the_typescript_sdk_lists_and_cancels_core_tasks(target: Target) -> None:
    call = Script.client(
        "sdk1_client.mjs",
        target.scenario(tasks=True, action="cancel", tool="start_sleep", args={"seconds": 600}),
    )
    task_id = call.until("started")["taskId"]
    assert task_id in call.until("listed")["taskIds"]
    assert call.until("cancelled")["task"]["status"] == "cancelled"
    refused = call.until("refused")
    assert (
        refused["code"] == -32602 and "already in terminal status 'cancelled'" in refused["message"]
    )
    assert call.until("status")["status"] == "cancelled"
    assert call.finish() == 0


def test_the_typescript_sdk_with_tasks_decides_an_approval_in_the_chat(target: Target) -> None:
    call = Script.client(
        "sdk1_client.mjs",
        target.scenario(
            tasks=True, action="call", tool="start_approval",
            args={"question": "Refund 120 EUR to Ana?"},
            decision={"approved": True, "comment": "ok by me"},
        ),
    )  # fmt: skip
    started = call.until("started")
    asked = call.until("elicited")
    assert asked["message"] == "Refund 120 EUR to Ana?"
    assert asked["meta"]["io.modelcontextprotocol/related-task"] == {"taskId": started["taskId"]}
    result = call.until("result")["result"]["structuredContent"]["result"]
    assert result == {
        "decided": True,
        "approved": True,
        "comment": "ok by me",
        "by": "mcp:elicitation",
    }
    assert call.finish() == 0


def test_the_typescript_sdk_with_plain_tools_decides_an_approval_in_await_results_form(
    target: Target,
) -> None:
    # Cursor's path: no tasks, but elicitation. await_result asks the person in a form.
    started = Script.client(
        "sdk1_client.mjs",
        target.scenario(tasks=False, action="call", tool="start_approval",
                        args={"question": "Ship release 4.2?"}),
    )  # fmt: skip
    job_id = started.until("result")["result"]["structuredContent"]["job_id"]
    assert started.finish() == 0
    rejoin = Script.client(
        "sdk1_client.mjs",
        target.scenario(tasks=False, action="rejoin", jobId=job_id,
                        decision={"approved": False, "comment": "not this week"}),
    )  # fmt: skip
    assert rejoin.until("elicited")["message"] == "Ship release 4.2?"
    done = rejoin.until("result")["result"]["structuredContent"]["done"][0]
    assert done["result"] == {
        "decided": True,
        "approved": False,
        "comment": "not this week",
        "by": "mcp:elicitation",
    }
    assert rejoin.finish() == 0


# -- ext-tasks 0.2.2 on @modelcontextprotocol/client 2.4 -------------------------------------------


@pytest.mark.parametrize("era", ["modern", "legacy"])
def test_the_tasks_client_library_runs_a_task_in_either_shape_across_a_sigkill(
    target: Target, era: str
) -> None:
    call = Script.client(
        "ext_tasks_client.mjs",
        target.scenario(era=era, action="call", tool="start_tests_long_steps", args=LONG_JOB),
    )
    connected = call.until("connected")
    if era == "modern":
        assert connected["capabilities"]["extensions"] == {"io.modelcontextprotocol/tasks": {}}
        assert "tasks" not in connected["capabilities"]
    else:
        assert connected["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
    task_id = call.until("started")["taskId"]
    wait_for_steps(target.steps_log, 3)
    target.kill()
    call.finish()
    target.restart()
    rejoin = Script.client(
        "ext_tasks_client.mjs", target.scenario(era=era, action="rejoin", taskId=task_id)
    )
    settled = rejoin.until("result", timeout=90)
    assert settled["status"] == "completed"
    assert settled["result"]["structuredContent"]["result"] == LONG_RESULT
    assert rejoin.finish() == 0
    assert_no_finished_step_ran_again(target.steps_log, restarts=1)


@pytest.mark.parametrize("era", ["modern", "legacy"])
def test_the_tasks_client_library_answers_an_approval_form(target: Target, era: str) -> None:
    call = Script.client(
        "ext_tasks_client.mjs",
        target.scenario(
            era=era, action="call", tool="start_approval", args={"question": "Ship v2 today?"},
            decision={"approved": False, "comment": "not on a Friday"},
        ),
    )  # fmt: skip
    assert call.until("elicited")["message"] == "Ship v2 today?"
    settled = call.until("result")
    decided_by = "mcp:tasks/update" if era == "modern" else "mcp:elicitation"
    assert settled["result"]["structuredContent"]["result"] == {
        "decided": True,
        "approved": False,
        "comment": "not on a Friday",
        "by": decided_by,
    }
    assert call.finish() == 0
