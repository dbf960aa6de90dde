"""The MCP server through the SDK's real client, in memory: every tool, the job
lifecycle as an agent sees it, and every tool with bad arguments."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from agent_tools import builtin_jobs
from agent_tools.cli import decide
from agent_tools.server import build_server, worker_running
from promises import SqlStore, open_store
from promises.functions import REGISTRY
from tests import durable_jobs as jobs
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

KINDS = {
    name: REGISTRY[name]
    for name in (
        "approval",
        "sleep",
        "tests.squares",
        "tests.sleeper",
        "tests.fails",
        "tests.long_steps",
        "tests.progress_then_sleep",
    )
}
assert builtin_jobs.approval is REGISTRY["approval"] and jobs.squares is REGISTRY["tests.squares"]


@pytest.fixture
async def connected(tmp_path: Path) -> AsyncIterator[tuple[Client, SqlStore, Any]]:
    with open_store(f"sqlite:///{tmp_path}/mcp.db", poll_interval=0.05) as store:
        server = build_server(store, KINDS, await_cap_s=5, progress_every_s=0.1)
        async with worker_running(server.service), Client(server) as client:  # type: ignore[attr-defined]
            yield client, store, server


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    text = result.content[0].text  # type: ignore[union-attr]
    return str(text)


async def test_the_tools_and_a_typed_tool_per_kind_are_listed(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, _, _ = connected
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert {
        "start_job",
        "probe_status",
        "await_result",
        "schedule",
        "list_jobs",
        "cancel_job",
    } <= set(tools)
    squares = tools["start_tests_squares"].input_schema
    assert squares["required"] == ["n"] and squares["properties"]["n"]["type"] == "integer"
    assert "tests.squares" in (tools["start_job"].description or "")


async def test_start_job_returns_at_once_and_await_result_rejoins_the_result(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, _, _ = connected
    started = await call(client, "start_job", {"kind": "tests.squares", "args": {"n": 4}})
    assert started["status"] in ("running", "waiting") and started["created"] is True
    result = await call(client, "await_result", {"job_ids": [started["job_id"]], "timeout_s": 5})
    assert result["pending"] == [] and result["done"][0]["status"] == "completed"
    assert result["done"][0]["result"] == [0, 1, 4, 9]
    typed = await call(client, "start_tests_squares", {"n": 2, "job_id": "typed-1"})
    assert typed["job_id"] == "typed-1"


async def test_the_same_job_id_with_the_same_args_is_the_same_job(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, _, _ = connected
    first = await call(
        client, "start_job", {"kind": "tests.squares", "args": {"n": 3}, "job_id": "same"}
    )
    again = await call(
        client, "start_job", {"kind": "tests.squares", "args": {"n": 3}, "job_id": "same"}
    )
    assert first["created"] is True and again["created"] is False
    message = await error(
        client, "start_job", {"kind": "tests.squares", "args": {"n": 4}, "job_id": "same"}
    )
    assert "already exists with other arguments" in message


async def test_probe_status_never_blocks_and_reports_unknown_ids(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, _, _ = connected
    started = await call(
        client, "start_job", {"kind": "tests.long_steps", "args": {"n": 100, "pause": 0.05}}
    )
    probe = await call(client, "probe_status", {"job_ids": [started["job_id"], "no-such-job"]})
    first, unknown = probe["jobs"]
    assert first["status"] == "running" and first["kind"] == "tests.long_steps"
    assert unknown == {
        "job_id": "no-such-job",
        "status": "unknown",
        "error": {
            "type": "NotFound",
            "message": "no job, timer or schedule has the id 'no-such-job'",
        },
    }
    await call(client, "cancel_job", {"job_id": started["job_id"]})


async def test_await_result_waits_within_its_bound_and_reports_the_jobs_own_progress(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, _, _ = connected
    slow = await call(
        client, "start_job", {"kind": "tests.progress_then_sleep", "args": {"seconds": 60}}
    )
    quick = await call(client, "start_job", {"kind": "tests.squares", "args": {"n": 1}})
    ids = [slow["job_id"], quick["job_id"]]
    assert "timeout_s must be at most 5 (got 600)" in await error(
        client, "await_result", {"job_ids": ids, "timeout_s": 600}
    )
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    result = await client.call_tool(
        "await_result", {"job_ids": ids, "timeout_s": 5}, progress_callback=on_progress
    )
    body = result.structured_content or {}
    assert body["waited_s"] >= 4.5  # it waited its whole bound for the slow one
    assert [j["job_id"] for j in body["done"]] == [quick["job_id"]]
    assert body["pending"][0]["status"] == "waiting" and "time" in body["pending"][0]["waiting_for"]
    # The count is of the jobs still running when the wait began: the quick one may have
    # finished before it (a loaded machine) or during it.
    last = progress[-1][2] or ""
    assert last in (
        f"1 of 2 finished; {slow['job_id']}: fetched 3 of 12 months",
        f"0 of 1 finished; {slow['job_id']}: fetched 3 of 12 months",
    ), last
    # A finished job shows no stale progress.
    assert "progress" not in body["done"][0]


async def test_a_job_that_reported_progress_shows_none_once_finished(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, store, _ = connected
    job_id = (
        await call(
            client, "start_job", {"kind": "tests.progress_then_sleep", "args": {"seconds": 600}}
        )
    )["job_id"]

    async def reported() -> dict[str, Any] | None:
        [job] = (await call(client, "probe_status", {"job_ids": [job_id]}))["jobs"]
        return job if job["status"] == "waiting" and job.get("progress") else None

    waiting = await eventually(reported, what="the job reported its progress and sleeps")
    assert waiting["progress"]["message"] == "fetched 3 of 12 months"
    await asyncio.to_thread(store.resolve, f"{job_id}.0")  # its sleep ends
    done = (await call(client, "await_result", {"job_ids": [job_id], "timeout_s": 5}))["done"]
    assert done[0]["status"] == "completed" and "progress" not in done[0]
    [probed] = (await call(client, "probe_status", {"job_ids": [job_id]}))["jobs"]
    assert "progress" not in probed


async def test_a_failed_job_reports_its_error(connected: tuple[Client, SqlStore, Any]) -> None:
    client, _, _ = connected
    started = await call(
        client, "start_job", {"kind": "tests.fails", "args": {"message": "no data for May"}}
    )
    done = (await call(client, "await_result", {"job_ids": [started["job_id"]], "timeout_s": 5}))[
        "done"
    ][0]
    assert done["status"] == "failed" and done["error"] == {
        "type": "ValueError",
        "message": "no data for May",
    }


async def test_a_waiting_approval_shows_its_id_and_a_decision_completes_the_job(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, _, server = connected
    started = await call(
        client, "start_job", {"kind": "approval", "args": {"question": "Refund 250 EUR?"}}
    )
    job_id = started["job_id"]

    async def waiting() -> dict[str, Any] | None:
        status = (await call(client, "probe_status", {"job_ids": [job_id]}))["jobs"][0]
        return status if status["status"] == "waiting" else None

    status = await eventually(waiting, what=f"{job_id} waits")
    assert status["waiting_for"]["approval"] == f"{job_id}.0"
    assert status["waiting_for"]["request"]["question"] == "Refund 250 EUR?"
    await asyncio.to_thread(decide, server.service, job_id, True, "ok by me")
    done = (await call(client, "await_result", {"job_ids": [job_id], "timeout_s": 5}))["done"][0]
    assert done["result"] == {"decided": True, "approved": True, "comment": "ok by me", "by": None}


async def test_schedule_makes_an_awaitable_timer_at_a_time_or_after_a_delay(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, store, _ = connected
    timer = await call(client, "schedule", {"delay_s": 0.3})
    assert timer["type"] == "timer" and timer["status"] == "waiting"
    done = (await call(client, "await_result", {"job_ids": [timer["id"]], "timeout_s": 5}))["done"][
        0
    ]
    assert done["status"] == "completed" and done["kind"] == "timer"
    from agent_tools.jobs import iso

    at = await call(client, "schedule", {"at": iso(store.clock() + 3_600_000), "id": "remind-ana"})
    assert at["id"] == "remind-ana" and at["next_fire_at"] == iso(
        store.get("remind-ana").timeout_at
    )


async def test_schedule_starts_a_job_later_or_on_a_cron_schedule_that_can_be_cancelled(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, _, _ = connected
    # An hour away, so that it is surely still waiting when probed, on any machine.
    tomorrow = await call(
        client, "schedule", {"delay_s": 3600, "kind": "tests.squares", "args": {"n": 2}}
    )
    assert tomorrow["type"] == "job"
    probe = (await call(client, "probe_status", {"job_ids": [tomorrow["id"]]}))["jobs"][0]
    assert probe["status"] == "waiting" and probe["waiting_for"]["reason"] == "scheduled start"
    later = await call(
        client, "schedule", {"delay_s": 0.3, "kind": "tests.squares", "args": {"n": 2}}
    )
    done = (await call(client, "await_result", {"job_ids": [later["id"]], "timeout_s": 5}))["done"][
        0
    ]
    assert done["result"] == [0, 1]
    cron = await call(
        client,
        "schedule",
        {
            "cron": "0 9 * * 1-5",
            "kind": "tests.squares",
            "args": {"n": 1},
            "id": "weekday-report",
            "timezone": "Europe/Lisbon",
        },
    )
    assert cron["type"] == "schedule" and cron["next_fire_at"].endswith("Z")
    cancelled = await call(client, "cancel_job", {"job_id": "weekday-report"})
    assert cancelled["job_id"] == "weekday-report" and cancelled["status"] == "cancelled"
    assert cancelled["type"] == "schedule" and cancelled["kind"] == "tests.squares"
    probe = (await call(client, "probe_status", {"job_ids": ["weekday-report"]}))["jobs"][0]
    assert probe["status"] == "cancelled" and probe["cron"] == "0 9 * * 1-5"


async def test_an_agent_that_lost_its_ids_finds_its_jobs_with_list_jobs(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, _, _ = connected
    ids = [
        (await call(client, "start_job", {"kind": "tests.squares", "args": {"n": i}}))["job_id"]
        for i in range(5)
    ]
    await call(client, "await_result", {"job_ids": ids, "timeout_s": 5})
    sleeping = await call(client, "start_job", {"kind": "sleep", "args": {"seconds": 60}})
    found, cursor = [], None
    while True:
        page = await call(
            client, "list_jobs", {"limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        found += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(found) == {*ids, sleeping["job_id"]} and found[0] == sleeping["job_id"]
    completed = await call(client, "list_jobs", {"status": "completed", "kind": "tests.squares"})
    assert {j["job_id"] for j in completed["jobs"]} == set(ids)

    async def listed_waiting() -> list[str] | None:  # once the sleep job has begun its sleep
        listed = await call(client, "list_jobs", {"status": "waiting"})
        ids = [j["job_id"] for j in listed["jobs"]]
        return ids if sleeping["job_id"] in ids else None

    waiting = await eventually(listed_waiting, what="the sleep job is listed as waiting")
    assert waiting == [sleeping["job_id"]]


async def test_cancel_job_stops_a_job_and_a_second_cancel_says_it_is_over(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, _, _ = connected
    started = await call(client, "start_job", {"kind": "sleep", "args": {"seconds": 60}})
    assert (await call(client, "cancel_job", {"job_id": started["job_id"]}))[
        "status"
    ] == "cancelled"
    assert "already cancelled; start a new one" in await error(
        client, "cancel_job", {"job_id": started["job_id"]}
    )


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("start_job", {"kind": 5}, "valid string"),
        ("start_job", {}, "kind"),
        (
            "start_job",
            {"kind": "nope"},
            "unknown job kind 'nope'; available kinds: approval, sleep, tests.fails",
        ),
        (
            "start_job",
            {"kind": "tests.squares", "args": {"m": 1}},
            "arguments do not fit tests.squares",
        ),
        (
            "start_job",
            {"kind": "tests.squares", "args": {"n": 1}, "job_id": ""},
            "job_id needs at least 1 character(s) (got 0)",
        ),
        (
            "start_job",
            {"kind": "approval", "args": {"question": "Ok?", "details": {"x": "x" * 2_000_000}}},
            "the limit is 1048576 bytes",
        ),
        (
            "start_job",
            {"kind": "tests.squares", "args": {"n": "three"}},
            "argument 'n' of tests.squares is invalid: should be a valid integer",
        ),
        ("start_tests_squares", {"n": "three"}, "valid integer"),
        ("probe_status", {"job_ids": "job-1"}, "valid list"),
        ("probe_status", {"job_ids": []}, "job_ids needs at least 1 item(s) (got 0)"),
        (
            "probe_status",
            {"job_ids": [f"j{i}" for i in range(101)]},
            "job_ids takes at most 100 item(s) (got 101)",
        ),
        (
            "await_result",
            {"job_ids": ["a"], "timeout_s": -1},
            "timeout_s must be at least 0 (got -1)",
        ),
        ("schedule", {}, "exactly one of at"),
        ("schedule", {"at": "2030-01-01T09:00:00"}, "has no time zone; add 'Z'"),
        ("schedule", {"at": "next tuesday"}, "is not an ISO-8601 time"),
        ("schedule", {"at": "2020-01-01T09:00:00Z"}, "is in the past"),
        ("schedule", {"delay_s": -5}, "delay_s must be at least 0 (got -5)"),
        (
            "schedule",
            {"cron": "every day", "kind": "tests.squares", "args": {"n": 1}},
            "cron must have exactly five fields",
        ),
        (
            "schedule",
            {"cron": "0 9 * * *"},
            "a cron schedule starts a job at every tick: give kind",
        ),
        (
            "schedule",
            {"cron": "0 9 * * *", "kind": "sleep", "args": {"seconds": 1}, "timezone": "Mars/Base"},
            "unknown time zone",
        ),
        (
            "list_jobs",
            {"status": "done"},
            "status must be one of 'running', 'waiting', 'completed', 'failed', 'cancelled' or 'timed_out' (got 'done')",
        ),
        ("list_jobs", {"limit": 0}, "limit must be at least 1 (got 0)"),
        ("list_jobs", {"cursor": "garbage"}, "cursor is not one this server handed out"),
        (
            "cancel_job",
            {"job_id": "no-such-job"},
            "no job, timer or schedule has the id 'no-such-job'",
        ),
    ],
)
async def test_bad_arguments_are_tool_errors_that_name_the_problem(
    connected: tuple[Client, SqlStore, Any], tool: str, args: dict[str, Any], expected: str
) -> None:
    client, _, _ = connected
    assert expected in await error(client, tool, args)
    # The server is still serving.
    assert (await call(client, "list_jobs", {}))["jobs"] is not None


async def test_job_results_are_json_the_agent_can_read(
    connected: tuple[Client, SqlStore, Any],
) -> None:
    client, _, _ = connected
    started = await call(client, "start_job", {"kind": "tests.squares", "args": {"n": 2}})
    result = await client.call_tool(
        "await_result", {"job_ids": [started["job_id"]], "timeout_s": 5}
    )
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text)["done"][0]["result"] == [0, 1]
