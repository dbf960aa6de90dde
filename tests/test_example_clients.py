"""examples/clients: the config files start a working server, and an OpenAI agent
(scripted with respx) uses the server as an MCP client to start and rejoin a job."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

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


PLACEHOLDER_ROOT = "/home/you/agent-tools"
PLACEHOLDER_DB = "/home/you/.local/share/agent-tools/agent-tools.db"
CONFIG_TARGETS = {"claude_desktop_config.json": "claude-desktop", "claude-code/.mcp.json": "claude-code",
                  "cursor/.cursor/mcp.json": "cursor"}  # fmt: skip


@pytest.mark.parametrize("config", STDIO_CONFIGS)
def test_each_stdio_config_is_what_agent_tools_config_prints(config: str) -> None:
    import subprocess

    entry = json.loads((CLIENTS / config).read_text())["mcpServers"]["agent-tools"]
    jobs = [a for i, a in enumerate(entry["args"]) if i and entry["args"][i - 1] == "--jobs"]
    printed = subprocess.run(
        [str(Path(sys.executable).parent / "agent-tools"), "config", CONFIG_TARGETS[config],
         "--db", PLACEHOLDER_DB, *(w for j in jobs for w in ("--jobs", j))],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    shown = printed.stdout.replace(str(ROOT), PLACEHOLDER_ROOT)
    assert json.loads(shown)["mcpServers"]["agent-tools"] == entry


@pytest.mark.parametrize("config", STDIO_CONFIGS)
async def test_each_stdio_config_launches_a_server_with_its_job_kinds_from_anywhere(
    config: str, tmp_path: Path
) -> None:
    text = (CLIENTS / config).read_text().replace(PLACEHOLDER_DB, str(tmp_path / "client.db"))
    entry = json.loads(text.replace(PLACEHOLDER_ROOT, str(ROOT)))["mcpServers"]["agent-tools"]
    assert entry["args"][0] == "serve" and Path(entry["command"]).is_absolute()
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    params = StdioServerParameters(command=entry["command"], args=entry["args"],
                                   env={**base, **entry["env"]}, cwd=str(tmp_path))  # fmt: skip
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert {"start_job", "await_result", "start_weather_gather"} <= names


@pytest.mark.parametrize("config", HTTP_CONFIGS)
def test_each_http_config_points_at_the_default_endpoint_with_a_token_header(config: str) -> None:
    entry = json.loads((CLIENTS / config).read_text())["mcpServers"]["agent-tools"]
    assert entry["url"] == "http://127.0.0.1:8765/mcp"
    assert entry["headers"] == {"Authorization": "Bearer ${AGENT_TOOLS_TOKEN}"}
    assert entry.get("type", "http") == "http"


def scripted_model(request: httpx.Request) -> httpx.Response:
    """Start a sleep job, await it by the id the server returned, then answer (the
    examples' stand-in model)."""
    from examples.fakes import agent_loop_script

    return chat_completion(agent_loop_script(json.loads(request.content)["messages"]))


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


def test_the_agent_loop_runs_offline_in_one_command_and_leaves_the_users_database_alone(
    tmp_path: Path,
) -> None:
    import subprocess

    home = tmp_path / "data"  # the user's data directory, where the default database lives
    env = {**os.environ, "XDG_DATA_HOME": str(home)}
    env.pop("AGENT_TOOLS_DB", None)
    env.pop("OPENAI_API_KEY", None)
    ran = subprocess.run([sys.executable, "examples/clients/agent_loop.py", "--offline"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert not (home / "agent-tools" / "agent-tools.db").exists()
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("offline: a scripted stand-in for the model at http://127.0.0.1:")
    assert lines[0].endswith("agent-loop.db (temporary)")
    temporary = Path(lines[0].split("database ")[1].removesuffix(" (temporary)"))
    assert not temporary.exists()  # gone with its directory
    assert (
        lines[1] == 'asked the agent: "Sleep a moment in the background, then tell me it is done."'
    )
    started = lines[2]
    assert started.startswith(
        'the agent called start_job {"kind": "sleep", "args": {"seconds": 0.2}}'
    )
    job_id = started.split(" -> job ")[1].split()[0]
    assert lines[3].startswith("the agent called await_result {")
    assert lines[3].endswith(f'-> job {job_id} completed: {{"slept_s": 0.2}}')
    assert lines[4] == f"agent: {job_id} is completed: {{'slept_s': 0.2}}" and len(lines) == 5

    without_key = subprocess.run([sys.executable, "examples/clients/agent_loop.py"], cwd=ROOT,
                                 env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert without_key.returncode == 1 and "agent_loop.py --offline" in without_key.stderr


def test_the_offline_agent_loop_keeps_its_jobs_in_the_database_it_is_given(tmp_path: Path) -> None:
    import subprocess

    from promises import open_store

    db = tmp_path / "kept.db"
    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_TOOLS_DB", "OPENAI_API_KEY")}
    ran = subprocess.run(
        [sys.executable, "examples/clients/agent_loop.py", "--offline", "--db", str(db)],
        cwd=ROOT, env={**env, "XDG_DATA_HOME": str(tmp_path / "data")},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0].endswith(f"database {db}")
    job_id = ran.stdout.splitlines()[2].split(" -> job ")[1].split()[0]
    with open_store(f"sqlite:///{db}") as store:
        assert store.get(job_id).state == "resolved"
