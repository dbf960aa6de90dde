"""The MCP Tasks extension (io.modelcontextprotocol/tasks, 2026-07-28) from the same
durable promises, through the SDK's client in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from agent_tools import builtin_jobs  # noqa: F401  (registers the built-in kinds)
from agent_tools.server import build_server, worker_running
from promises import open_store
from promises.functions import REGISTRY
from tests import durable_jobs  # noqa: F401  (registers the test kinds)
from tests.tasks_client import (
    CreateTaskResult,
    TasksClient,
    cancel_task,
    elicitation_declared,
    get_task,
    start_task,
    update_task,
)
from tests.waiting import eventually

pytestmark = pytest.mark.anyio
KINDS = {
    k: REGISTRY[k]
    for k in ("approval", "sleep", "tests.squares", "tests.fails", "tests.progress_then_sleep")
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Any]:
    with open_store(f"sqlite:///{tmp_path}/tasks.db", poll_interval=0.05) as store:
        server = build_server(store, KINDS)
        async with worker_running(server.service):  # type: ignore[attr-defined]
            yield server


async def until_status(client: Client, task_id: str, wanted: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        task = await get_task(client, task_id)
        return task if task["status"] == wanted else None

    return await eventually(reached, what=f"task {task_id} becomes {wanted}")


async def test_a_declaring_client_gets_a_task_handle_and_the_inlined_result(server: Any) -> None:
    async with Client(server, extensions=[TasksClient()]) as client:
        handle = await start_task(client, "start_job", {"kind": "tests.squares", "args": {"n": 3}})
        # The handle says how the job stands when it is made: a quick job may be done.
        assert isinstance(handle, CreateTaskResult) and handle.status in ("working", "completed")
        typed = await start_task(client, "start_tests_squares", {"n": 2})
        assert isinstance(typed, CreateTaskResult)
        assert (
            len(handle.task_id) >= 32 and handle.task_id != typed.task_id
        )  # unguessable, one per call
        done = await until_status(client, handle.task_id, "completed")
        assert done["resultType"] == "complete" and done["result"]["isError"] is False
        assert done["result"]["structuredContent"]["result"] == [0, 1, 4]
        assert done["lastUpdatedAt"] >= done["createdAt"]


async def test_clients_without_the_extension_keep_the_plain_tools(server: Any) -> None:
    async with Client(server) as client:
        plain = await client.call_tool("start_job", {"kind": "tests.squares", "args": {"n": 1}})
        assert (
            not plain.is_error
            and plain.structured_content is not None
            and "job_id" in plain.structured_content
        )
        with pytest.raises(MCPError) as refused:
            await get_task(client, "anything")
        assert refused.value.error.code == -32021


async def test_an_unknown_task_id_is_invalid_params(server: Any) -> None:
    async with Client(server, extensions=[TasksClient()]) as client:
        with pytest.raises(MCPError) as unknown:
            await get_task(client, "not-a-task")
        assert (
            unknown.value.error.code == -32602 and "Task not found" in unknown.value.error.message
        )


async def test_status_message_carries_progress(server: Any) -> None:
    async with Client(server, extensions=[TasksClient()]) as client:
        handle = await start_task(
            client, "start_job", {"kind": "tests.progress_then_sleep", "args": {"seconds": 30}}
        )

        async def progressed() -> dict[str, Any] | None:
            task = await get_task(client, handle.task_id)
            return task if task["statusMessage"] == "fetched 3 of 12 months" else None

        task = await eventually(progressed)
        assert task["status"] == "working"


async def test_a_job_waiting_for_a_person_is_input_required_and_tasks_update_answers_it(
    server: Any,
) -> None:
    async with Client(
        server, extensions=[TasksClient()], elicitation_callback=elicitation_declared
    ) as client:
        handle = await start_task(client, "start_approval", {"question": "Refund 250 EUR to Ana?"})
        task = await until_status(client, handle.task_id, "input_required")
        ((key, request),) = task["inputRequests"].items()
        assert request["method"] == "elicitation/create"
        assert request["params"]["message"] == "Refund 250 EUR to Ana?"
        # lastUpdatedAt moved with the job: it is when the job began to wait for a person
        # (or when the task was made, if the job got there first: it is never earlier).
        listed = await client.call_tool("list_jobs", {"kind": "approval"})
        [job] = (listed.structured_content or {})["jobs"]
        assert job["status"] == "waiting"
        assert task["lastUpdatedAt"] == max(job["updated_at"], task["createdAt"])
        assert task["lastUpdatedAt"] >= task["createdAt"]
        ignored = await update_task(
            client, handle.task_id, {"some-other-key": {"action": "accept", "content": {}}}
        )
        assert ignored["resultType"] == "complete"
        assert (await get_task(client, handle.task_id))["status"] == "input_required"
        await update_task(
            client,
            handle.task_id,
            {key: {"action": "accept", "content": {"approved": True, "comment": "fine"}}},
        )
        done = await until_status(client, handle.task_id, "completed")
        assert done["result"]["resultType"] == "complete"  # the inlined CallToolResult is typed
        assert done["result"]["structuredContent"]["result"] == {
            "decided": True,
            "approved": True,
            "comment": "fine",
            "by": "mcp:tasks/update",
        }


async def test_a_declined_input_request_rejects_the_approval(server: Any) -> None:
    async with Client(
        server, extensions=[TasksClient()], elicitation_callback=elicitation_declared
    ) as client:
        handle = await start_task(client, "start_approval", {"question": "Delete the archive?"})
        task = await until_status(client, handle.task_id, "input_required")
        await update_task(
            client, handle.task_id, {key: {"action": "decline"} for key in task["inputRequests"]}
        )
        done = await until_status(client, handle.task_id, "completed")
        assert done["result"]["structuredContent"]["result"]["approved"] is False


async def test_tasks_cancel_cancels_the_job_and_a_failed_job_completes_with_is_error(
    server: Any,
) -> None:
    async with Client(server, extensions=[TasksClient()]) as client:
        sleeping = await start_task(client, "start_sleep", {"seconds": 600})
        assert (await cancel_task(client, sleeping.task_id))["resultType"] == "complete"
        await until_status(client, sleeping.task_id, "cancelled")
        assert (await cancel_task(client, sleeping.task_id))[
            "resultType"
        ] == "complete"  # acknowledged again
        failing = await start_task(
            client, "start_job", {"kind": "tests.fails", "args": {"message": "no rows"}}
        )
        done = await until_status(client, failing.task_id, "completed")
        assert done["result"]["isError"] is True
        assert done["result"]["structuredContent"]["error"] == {
            "type": "ValueError",
            "message": "no rows",
        }


async def test_a_bad_tool_call_returns_the_tool_error_not_a_task(server: Any) -> None:
    async with Client(server, extensions=[TasksClient()]) as client:
        result = await start_task(client, "start_job", {"kind": "nope"})
        assert result.is_error and "unknown job kind 'nope'" in result.content[0].text


async def test_a_2025_11_25_client_keeps_the_plain_tools_even_if_it_names_the_extension(
    server: Any,
) -> None:
    async with Client(server, mode="legacy", extensions=[TasksClient()]) as client:
        assert client.session.protocol_version == "2025-11-25"
        result = await client.call_tool("start_job", {"kind": "tests.squares", "args": {"n": 2}})
        assert not result.is_error and result.structured_content is not None
        assert (
            result.structured_content["status"] in ("running", "waiting")
            and "job_id" in result.structured_content
        )
