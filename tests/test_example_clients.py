"""examples/clients: the config files start a working server, and an OpenAI agent
(scripted with respx) uses the server as an MCP client to start and rejoin a job."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from mcp import Client, StdioServerParameters

from examples.clients.agent_loop import run_agent, stdio_server
from tests.reminders_harness import chat_completion

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent
CLIENTS = ROOT / "examples" / "clients"
STDIO_CONFIGS = ["claude_desktop_config.json", "claude-code/.mcp.json", "cursor/.cursor/mcp.json"]
HTTP_CONFIGS = ["claude-code/.mcp.http.json", "cursor/.cursor/mcp.http.json"]


@pytest.mark.parametrize("config", STDIO_CONFIGS)
async def test_each_stdio_config_launches_a_server_with_its_job_kinds(
    config: str, tmp_path: Path
) -> None:
    entry = json.loads((CLIENTS / config).read_text())["mcpServers"]["agent-tools"]
    assert entry["command"] == "agent-tools" and entry["args"][0] == "serve"
    command = str(Path(sys.executable).parent / entry["command"])  # as installed by `make`
    env = {**os.environ, **entry["env"], "AGENT_TOOLS_DB": str(tmp_path / "client.db")}
    async with Client(
        StdioServerParameters(command=command, args=entry["args"], env=env, cwd=str(ROOT))
    ) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert {"start_job", "await_result", "start_weather_gather"} <= names


@pytest.mark.parametrize("config", HTTP_CONFIGS)
def test_each_http_config_points_at_the_default_endpoint_with_a_token_header(config: str) -> None:
    entry = json.loads((CLIENTS / config).read_text())["mcpServers"]["agent-tools"]
    assert entry["url"] == "http://127.0.0.1:8765/mcp"
    assert entry["headers"] == {"Authorization": "Bearer ${AGENT_TOOLS_TOKEN}"}
    assert entry.get("type", "http") == "http"


def scripted_model(request: httpx.Request) -> httpx.Response:
    """Start a sleep job, await it by the id the server returned, then answer."""
    messages = json.loads(request.content)["messages"]
    last = messages[-1]
    if last["role"] == "user":
        call = {
            "name": "start_job",
            "arguments": json.dumps({"kind": "sleep", "args": {"seconds": 0.2}}),
        }
    else:
        result: dict[str, Any] = json.loads(last["content"])
        if "job_id" in result:
            call = {
                "name": "await_result",
                "arguments": json.dumps({"job_ids": [result["job_id"]], "timeout_s": 20}),
            }
        else:
            done = result["done"][0]
            message = {
                "role": "assistant",
                "content": f"{done['job_id']} is {done['status']}: {done['result']}",
            }
            return chat_completion(message)
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": f"c{len(messages)}", "type": "function", "function": call}],
    }
    return chat_completion(message)


async def test_an_openai_agent_starts_a_job_and_rejoins_it_through_mcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://llm.test/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("AGENT_TOOLS_DB", str(tmp_path / "agent.db"))
    with respx.mock() as mock:
        route = mock.post("https://llm.test/v1/chat/completions").mock(side_effect=scripted_model)
        answer = await run_agent("Sleep a moment in the background.", stdio_server())
    assert answer.endswith("is completed: {'slept_s': 0.2}") and answer.startswith("sleep-")
    assert route.call_count == 3
    sent_tools = {
        t["function"]["name"] for t in json.loads(route.calls[0].request.content)["tools"]
    }
    assert {"start_job", "await_result", "probe_status"} <= sent_tools
