"""examples/proxy: the before/after of README's proxy section, run. A client that cuts
calls (Claude Desktop cuts at about 60 s; here the cut and the report's duration are
scaled down) loses a slow call made directly, and gets it through the proxy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from agent_tools.proxy import load_policy

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "proxy"
PLACEHOLDER_ROOT = "/home/you/agent-tools"
PLACEHOLDER_DB = "/home/you/.local/share/agent-tools/agent-tools.db"
CUT_S = 3.0  # the client's cut, scaled down from Claude Desktop's ~60 s


def entry(name: str, tmp_path: Path) -> tuple[str, dict[str, object]]:
    text = (EXAMPLE / name).read_text().replace(PLACEHOLDER_DB, str(tmp_path / "proxy.db"))
    text = text.replace(f"{PLACEHOLDER_ROOT}/.venv/bin/python", sys.executable)
    text = text.replace(f"{PLACEHOLDER_ROOT}/.venv/bin/agent-tools",
                        str(Path(sys.executable).parent / "agent-tools"))  # fmt: skip
    [(server, config)] = json.loads(text.replace(PLACEHOLDER_ROOT, str(ROOT)))["mcpServers"].items()
    return server, config


def test_the_after_config_is_what_agent_tools_config_prints() -> None:
    printed = subprocess.run(
        [str(Path(sys.executable).parent / "agent-tools"), "config", "claude-desktop",
         "--db", PLACEHOLDER_DB, "--proxy", "--", ".venv/bin/python",
         "examples/proxy/reports_server.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    shown = json.loads(printed.stdout.replace(str(ROOT), PLACEHOLDER_ROOT))
    assert shown == json.loads((EXAMPLE / "claude_desktop_after.json").read_text())


def test_the_example_policy_loads() -> None:
    policy = load_policy(str(EXAMPLE / "policy.toml"))
    report = policy.of("generate_report")
    assert report.background and report.retry and report.concurrency == 2
    assert policy.of("other").inline_wait_s == 45


async def test_before_the_call_is_cut_and_after_it_is_answered(tmp_path: Path) -> None:
    args = {"topic": "Q3 sales", "seconds": CUT_S * 2}
    _, before = entry("claude_desktop_before.json", tmp_path)
    direct = StdioServerParameters(command=str(before["command"]), args=list(before["args"]))  # type: ignore[call-overload]
    async with Client(direct) as client:
        with pytest.raises(MCPError):  # the client gives up: the report is lost
            await client.call_tool("generate_report", args, read_timeout_seconds=CUT_S)

    server, after = entry("claude_desktop_after.json", tmp_path)
    assert server == "reports_server"
    argv = list(after["args"])  # type: ignore[call-overload]
    argv[argv.index("--") : argv.index("--")] = ["--no-ui", "--inline-wait", str(CUT_S / 3)]
    proxied = StdioServerParameters(command=str(after["command"]), args=argv, cwd=str(tmp_path))
    async with Client(proxied) as client:
        started = await client.call_tool("generate_report", args, read_timeout_seconds=CUT_S)
        job = started.structured_content or {}
        assert job["status"] == "running" and "await_result" in job["message"]
        report = None
        while report is None:  # each call stays under the client's cut, as the model's do
            waited = await client.call_tool(
                "await_result", {"job_ids": [job["job_id"]], "timeout_s": CUT_S / 2},
                read_timeout_seconds=CUT_S,
            )  # fmt: skip
            done = (waited.structured_content or {})["done"]
            report = done[0]["result"] if done else None
    assert report["content"][0]["text"] == "Report on Q3 sales: 4 sections, all good."
