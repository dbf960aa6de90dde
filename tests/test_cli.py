"""The ``agent-tools`` command as a user runs it: a real subprocess on a real file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from promises import open_store


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_status_creates_the_store_on_first_use_and_counts_promises(tmp_path: Path) -> None:
    db = tmp_path / "data" / "store.db"
    db.parent.mkdir()
    first = _run("--db", str(db), "status")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["promises"] == {"pending": 0, "resolved": 0, "rejected": 0}
    with open_store(f"sqlite:///{db}") as store:
        store.create("a", timeout_at=store.clock() + 60_000)
        store.create("b", timeout_at=store.clock() + 60_000)
        store.resolve("b")
    second = _run("status", env={"AGENT_TOOLS_DB": str(db)})
    assert json.loads(second.stdout)["promises"] == {"pending": 1, "resolved": 1, "rejected": 0}


def test_a_bad_database_url_is_a_clear_error_on_stderr(tmp_path: Path) -> None:
    result = _run("--db", "mysql://nowhere/x", "status")
    assert result.returncode == 2 and result.stdout == ""
    assert "unsupported database 'mysql'" in result.stderr


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_jobs_list_show_cancel_and_approve_reject_from_the_command_line(tmp_path: Path) -> None:
    from promises import Runtime

    db = str(tmp_path / "cli.db")
    with open_store(f"sqlite:///{db}") as store:  # jobs started elsewhere (by an agent)
        from agent_tools import builtin_jobs

        runtime = Runtime(store)
        runtime.start(builtin_jobs.approval, "Ship it?", id="ask-1")
        runtime.start(builtin_jobs.approval, "Delete it?", id="ask-2")
        runtime.start(builtin_jobs.sleep, 600, id="nap")
        # a worker run until both approvals wait for a person
        import asyncio

        from promises import Worker

        async def until_waiting() -> None:
            worker = Worker(runtime, poll_interval=0.05)
            task = asyncio.create_task(worker.run())

            def suspended(job_id: str) -> bool:
                task = runtime.tasks.get(job_id)
                return task is not None and task.waiting_on == f"{job_id}.0"

            while not (suspended("ask-1") and suspended("ask-2")):
                await asyncio.sleep(0.05)
            worker.stop()
            await task

        asyncio.run(until_waiting())

    listed = _json(_run("jobs", "list", "--db", db))
    assert {j["job_id"] for j in listed["jobs"]} == {"ask-1", "ask-2", "nap"}
    shown = _json(_run("jobs", "show", "ask-1", "--db", db))
    assert shown["status"] == "waiting" and shown["waiting_for"]["approval"] == "ask-1.0"
    assert _json(_run("approve", "ask-1", "--comment", "go", "--db", db)) == {
        "approval": "ask-1.0",
        "approved": True,
        "comment": "go",
    }
    assert _json(_run("reject", "ask-2.0", "--db", db))["approved"] is False
    second = _run("approve", "ask-1", "--db", db)
    assert second.returncode == 2 and "already decided; the first decision stands" in second.stderr
    assert _json(_run("jobs", "cancel", "nap", "--db", db))["status"] == "cancelled"
    unknown = _run("jobs", "cancel", "nobody", "--db", db)
    assert (
        unknown.returncode == 2
        and "no job, timer or schedule has the id 'nobody'" in unknown.stderr
    )


def test_config_prints_the_exact_snippet_for_each_client(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    desktop = _json(_run("config", "claude-desktop", "--db", db, "--jobs", "tests.durable_jobs"))
    entry = desktop["mcpServers"]["agent-tools"]
    assert Path(entry["command"]).name == "agent-tools" and Path(entry["command"]).exists()
    assert entry["args"] == ["serve", "--db", f"sqlite:///{db}", "--jobs", "tests.durable_jobs"]
    code = _json(_run("config", "claude-code", "--db", db))["mcpServers"]["agent-tools"]
    assert code["type"] == "stdio"
    cursor_http = _json(_run("config", "cursor", "--http", "--port", "9000", "--token", "t"))
    assert cursor_http["mcpServers"]["agent-tools"] == {
        "url": "http://127.0.0.1:9000/mcp",
        "headers": {"Authorization": "Bearer ${AGENT_TOOLS_TOKEN}"},
    }
    refused = _run("config", "claude-desktop", "--http")
    assert (
        refused.returncode != 0 and "Claude Desktop launches servers over stdio" in refused.stderr
    )
