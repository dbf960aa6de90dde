"""examples/approvals: a refund that waits for a person — decided on the command line,
in-band through MCP Tasks, while the server is down, and too late."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from examples.approvals import refunds
from promises import Runtime, SqlStore, Worker, open_store
from tests.waiting import eventually

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("REFUNDS_LEDGER", str(path))
    return path


def entries(ledger: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "agent-tools"), *args, "--db", str(db)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "refunds.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SqlStore]:
    with open_store(f"sqlite:///{db}", poll_interval=0.05) as s:
        yield s


async def run_until(store: SqlStore, condition: Callable[[], bool]) -> None:
    """Run a worker until ``condition()`` holds, then stop it (the server going down)."""
    worker = Worker(Runtime(store), poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    try:
        await eventually(condition, what="the condition")
    finally:
        worker.stop()
        await task


def waiting_for_a_person(store: SqlStore, job_id: str) -> bool:
    task = Runtime(store).tasks.get(job_id)
    return task is not None and task.waiting_on == f"{job_id}.0"


def settled(store: SqlStore, job_id: str) -> bool:
    return not store.get(job_id).pending


async def test_a_small_refund_needs_no_person(store: SqlStore, ledger: Path) -> None:
    Runtime(store).start(refunds.refund, "A-1", 20.0, "damaged", id="r1")
    await run_until(store, lambda: settled(store, "r1"))
    assert Runtime.result(store.get("r1"))["decided_by"] == "policy"
    assert [e["order_id"] for e in entries(ledger)] == ["A-1"]


async def test_approved_on_the_command_line_the_refund_is_issued_once(
    store: SqlStore, db: Path, ledger: Path
) -> None:
    Runtime(store).start(refunds.refund, "B-2", 250.0, "never arrived", id="r2")
    await run_until(store, lambda: waiting_for_a_person(store, "r2"))
    shown = json.loads(cli(db, "jobs", "show", "r2", "--json").stdout)
    assert shown["waiting_for"]["request"]["question"] == "Refund 250.00 EUR for order B-2?"
    approved = cli(db, "approve", "r2", "--comment", "ok")
    assert approved.returncode == 0, approved.stderr
    await run_until(store, lambda: settled(store, "r2"))
    result = Runtime.result(store.get("r2"))
    assert result["status"] == "refunded" and result["decided_by"] == "person"
    assert len(entries(ledger)) == 1


async def test_rejected_on_the_command_line_nothing_is_paid(
    store: SqlStore, db: Path, ledger: Path
) -> None:
    Runtime(store).start(refunds.refund, "C-3", 900.0, "changed mind", id="r3")
    await run_until(store, lambda: waiting_for_a_person(store, "r3"))
    assert cli(db, "reject", "r3", "--comment", "outside the return window").returncode == 0
    await run_until(store, lambda: settled(store, "r3"))
    assert Runtime.result(store.get("r3")) == {
        "status": "rejected",
        "order_id": "C-3",
        "comment": "outside the return window",
    }
    assert entries(ledger) == []


async def test_a_decision_made_while_the_server_is_down_is_seen_after_restart(
    store: SqlStore, db: Path, ledger: Path
) -> None:
    Runtime(store).start(refunds.refund, "D-4", 300.0, "late", id="r4")
    await run_until(store, lambda: waiting_for_a_person(store, "r4"))  # then the server goes down
    assert cli(db, "approve", "r4").returncode == 0  # decided while nothing runs the job
    assert store.get("r4").pending
    await run_until(store, lambda: settled(store, "r4"))  # the server is back
    assert Runtime.result(store.get("r4"))["status"] == "refunded"


async def test_a_decision_after_the_deadline_is_refused_and_nothing_is_paid(
    store: SqlStore, db: Path, ledger: Path
) -> None:
    Runtime(store).start(
        refunds.refund, "E-5", 500.0, "slow", 100.0, 0.5 / 3600, id="r5"
    )  # half a second
    await run_until(store, lambda: settled(store, "r5"))
    assert Runtime.result(store.get("r5")) == {"status": "expired", "order_id": "E-5"}
    late = cli(db, "approve", "r5.0")
    assert late.returncode == 1
    assert "This approval expired on" in late.stderr and "without a decision" in late.stderr
    assert entries(ledger) == []


async def test_a_person_decides_in_band_through_mcp_task_input(
    store: SqlStore, ledger: Path
) -> None:
    from mcp import Client

    from agent_tools.server import build_server, worker_running
    from promises.functions import REGISTRY
    from tests.tasks_client import TasksClient, get_task, start_task, update_task

    async def status_is(client: Client, task_id: str, wanted: str) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            task = await get_task(client, task_id)
            return task if task["status"] == wanted else None

        return await eventually(reached, what=f"task {task_id} becomes {wanted}")

    server = build_server(store, {"refunds.refund": REGISTRY["refunds.refund"]})
    async with worker_running(server.service), Client(server, extensions=[TasksClient()]) as client:  # type: ignore[attr-defined]
        handle = await start_task(
            client,
            "start_refunds_refund",
            {"order_id": "F-6", "amount_eur": 120.0, "reason": "broken"},
        )
        task = await status_is(client, handle.task_id, "input_required")
        ((key, request),) = task["inputRequests"].items()
        assert request["params"]["message"] == "Refund 120.00 EUR for order F-6?"
        await update_task(
            client, handle.task_id, {key: {"action": "accept", "content": {"approved": True}}}
        )
        task = await status_is(client, handle.task_id, "completed")
    assert task["result"]["structuredContent"]["result"]["status"] == "refunded"
    assert len(entries(ledger)) == 1


@pytest.mark.slow
def test_the_offline_refund_demo_is_approved_from_the_page_in_a_browser() -> None:
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip(f"no Chromium at {chromium} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    demo = subprocess.Popen(
        [sys.executable, "examples/approvals/demo.py"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        assert demo.stdout.readline().startswith("asked for a refund of 250.00 EUR for order B-2")
        waiting = demo.stdout.readline()
        assert waiting.startswith("it waits for a person. Decide here: http://127.0.0.1:")
        link = waiting.split("Decide here: ")[1].strip()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium), args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            page.goto(link)
            assert page.inner_text("#question") == "Refund 250.00 EUR for order B-2?"
            assert "reason\nnever arrived" in page.inner_text("#details")
            page.fill("input[name=by]", "Ana")
            page.click("button.approve")
            assert "You approved: Refund 250.00 EUR for order B-2?" in page.inner_text("#restated")
            browser.close()
        assert demo.stdout.readline().startswith("refunded: ")
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()


def test_the_refund_demo_can_approve_by_itself_for_a_quick_look() -> None:
    demo = subprocess.run(
        [sys.executable, "examples/approvals/demo.py", "--approve-as", "Ana"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.splitlines()
    assert lines[2] == "approved on the page as Ana"
    assert lines[3].startswith("refunded: 250.00 EUR for order B-2, approved by a person")
    assert "[server] " in demo.stderr and "serving MCP over HTTP" in demo.stderr
