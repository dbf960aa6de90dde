"""A minimal client side of the MCP Tasks extension, for the tests: it declares the
extension, claims ``resultType: "task"`` results, and sends ``tasks/*`` requests."""

from __future__ import annotations

from typing import Any, Literal

from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientRequestContext
from mcp_types import CallToolResult, ElicitRequestParams, ElicitResult, ErrorData, Request, Result
from pydantic import ConfigDict, Field, TypeAdapter

from agent_tools.tasks_ext import TASKS_EXTENSION, TaskParams, UpdateTaskParams


class CreateTaskResult(Result):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    result_type: Literal["task"] = Field(alias="resultType")
    task_id: str = Field(alias="taskId")
    status: str


async def _unused(result: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
    raise AssertionError("tests read task handles with allow_claimed=True")


class TasksClient(ClientExtension):
    identifier = TASKS_EXTENSION

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=_unused)]


class GetTask(Request[TaskParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    name_param = "taskId"


class CancelTask(Request[TaskParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    name_param = "taskId"


class UpdateTask(Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    name_param = "taskId"


_ANY: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


async def start_task(client: Client, tool: str, args: dict[str, Any]) -> Any:
    return await client.session.call_tool(tool, args, allow_claimed=True)


async def get_task(client: Client, task_id: str) -> dict[str, Any]:
    return await client.session.send_request(GetTask(params=TaskParams(task_id=task_id)), _ANY)


async def cancel_task(client: Client, task_id: str) -> dict[str, Any]:
    return await client.session.send_request(CancelTask(params=TaskParams(task_id=task_id)), _ANY)


async def update_task(client: Client, task_id: str, responses: dict[str, Any]) -> dict[str, Any]:
    params = UpdateTaskParams(task_id=task_id, input_responses=responses)
    return await client.session.send_request(UpdateTask(params=params), _ANY)


async def elicitation_declared(
    context: ClientRequestContext, params: ElicitRequestParams
) -> ElicitResult | ErrorData:
    """Declares form elicitation; the Tasks extension delivers its requests through
    ``tasks/get`` instead, so this is never called."""
    raise AssertionError("a 2026-07-28 task asks through inputRequests, not elicitation/create")
