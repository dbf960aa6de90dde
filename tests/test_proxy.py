"""``agent-tools proxy`` as its users meet it: a real proxy process in front of a real
upstream MCP server (``tests/proxy_upstream.py``), driven by the Python ``mcp`` client
over stdio and over streamable HTTP — inline answers unchanged, slow calls rejoined
with ``await_result``, a SIGKILL of the proxy mid-call, the upstream crashing, cancel,
progress, the per-tool policy, a changing tool list, 50 calls at once.

Nothing here sleeps to let something happen: each test waits for what the upstream
saw (its marks file) or for a status, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from agent_tools.cli import main
from agent_tools.config import ConfigError
from agent_tools.proxy import (
    IDEMPOTENCY_KEY,
    Policy,
    ToolPolicy,
    UpstreamSpec,
    load_policy,
    parse_header,
)
from tests.servers import Listening, listening_port
from tests.tasks_client import TasksClient, get_task, start_task
from tests.waiting import eventually

ROOT = Path(__file__).parent.parent
UPSTREAM = [sys.executable, str(ROOT / "tests" / "proxy_upstream.py")]
AGENT_TOOLS = [sys.executable, "-m", "agent_tools.cli"]

pytestmark = [pytest.mark.slow]


# -- policy, upstream spec and config (no processes) ---------------------------------------


def test_the_policy_file_sets_defaults_and_per_tool_rules(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        "[defaults]\ninline_wait_s = 20\n\n"
        "[tools.report]\nbackground = true\nretry = true\nmax_attempts = 4\nconcurrency = 2\n"
    )
    policy = load_policy(str(path))
    assert policy.of("anything") == ToolPolicy(inline_wait_s=20.0)
    report = policy.of("report")
    assert (report.background, report.retry, report.max_attempts, report.concurrency) == (
        True, True, 4, 2,
    )  # fmt: skip
    assert report.inline_wait_s == 20.0 and report.wait_s == 0.0
    # --inline-wait on the command line wins over the file's default.
    assert load_policy(str(path), 5).of("other").inline_wait_s == 5.0
    assert load_policy(None) == Policy()
    assert load_policy(None).of("x").retry is False  # upstream tools may not be idempotent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tools.a]\nretries = 3\n", "[tools.a] has an unknown setting 'retries'"),
        ("[tools.a]\nretry = 'yes'\n", "retry must be true or false, got 'yes'"),
        ("[defaults]\ninline_wait_s = 90\n", "inline_wait_s must be seconds from 0 to 50"),
        ("[tools.a]\nconcurrency = 0\n", "concurrency must be a whole number of at least 1"),
        ("[tools.a]\nmax_attempts = 1.5\n", "max_attempts must be a whole number from 1 to 100"),
        ("[tools.a]\ntimeout_s = 0\n", "timeout_s must be seconds, more than 0"),
        ("[tool.a]\nretry = true\n", "unknown section 'tool'"),
        ("[tools]\na = 1\n", "[tools.a] must be a table of settings"),
        ("[tools.a\n", "is not valid TOML"),
    ],
)
def test_a_bad_policy_file_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_policy(str(path))
    assert message in str(raised.value)


def test_bad_proxy_settings_are_refused_in_words() -> None:
    with pytest.raises(ConfigError, match="--inline-wait must be seconds from 0 to 50"):
        load_policy(None, 60)
    with pytest.raises(ConfigError, match="cannot read the policy file"):
        load_policy("/nonexistent/policy.toml")
    with pytest.raises(ConfigError, match="must look like 'Name: value'"):
        parse_header("no colon here")
    with pytest.raises(ConfigError, match="either as a command after '--'"):
        UpstreamSpec(command=("x",), url="http://h/mcp")
    with pytest.raises(ConfigError, match="either as a command after '--'"):
        UpstreamSpec()
    with pytest.raises(ConfigError, match="must be an http:// or https:// URL"):
        UpstreamSpec(url="ftp://h/mcp")


def test_a_header_value_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_TOKEN", "abc123")
    assert parse_header("Authorization: Bearer ${UPSTREAM_TOKEN}") == (
        "Authorization", "Bearer abc123",
    )  # fmt: skip


def test_each_upstream_gets_its_own_job_kind() -> None:
    a = UpstreamSpec(command=("npx", "-y", "@modelcontextprotocol/server-filesystem", "/a"))
    b = UpstreamSpec(command=("npx", "-y", "@modelcontextprotocol/server-filesystem", "/b"))
    assert a.label == "server-filesystem"
    # Two proxies of one server with different arguments never run each other's calls.
    assert a.kind() != b.kind() and a.kind().startswith("proxy:server-filesystem-")
    assert a.kind() == UpstreamSpec(command=a.command).kind()  # stable across restarts
    assert a.kind("files") == "proxy:files"
    assert UpstreamSpec(url="https://tools.example.com/mcp").label == "tools.example.com"


def test_config_prints_a_client_entry_that_wraps_a_server(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:  # fmt: skip
    db = tmp_path / "c.db"
    assert main(["config", "claude-desktop", "--db", str(db), "--proxy", "--", "npx", "-y",
                 "some-server"]) == 0  # fmt: skip
    entry = json.loads(capsys.readouterr().out)["mcpServers"]["some-server"]
    assert entry["args"] == ["proxy", "--db", f"sqlite:///{db}", "--name",
                             "some-server-claude-desktop", "--", "npx", "-y", "some-server"]  # fmt: skip
    assert Path(entry["command"]).name == "agent-tools" and entry["env"] == {}
    assert main(["config", "claude-desktop", "--proxy"]) == 2
    assert "--proxy wraps the server given after '--'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # only proxy and config take a command after '--'
        main(["serve", "--", "npx", "x"])


@pytest.mark.parametrize("target", ["claude-desktop", "claude-code", "cursor"])
def test_config_passes_the_proxys_settings_and_the_servers_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, target: str
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[tools.report]\nbackground = true\n")
    assert main(["config", target, "--db", str(tmp_path / "c.db"), "--proxy", "--policy",
                 str(policy), "--inline-wait", "20", "--env", "API_KEY=k-123", "--", "npx",
                 "-y", "some-server"]) == 0  # fmt: skip
    entry = json.loads(capsys.readouterr().out)["mcpServers"]["some-server"]
    args = entry["args"]
    assert args[args.index("--policy") + 1] == str(policy)
    assert args[args.index("--inline-wait") + 1] == "20"
    # Each client's proxy has a kind of its own: another client's proxy of the same
    # server, with other credentials, never makes its calls.
    assert args[args.index("--name") + 1] == f"some-server-{target}"
    assert entry["env"] == {"API_KEY": "k-123"}
    assert ("type" in entry) == (target == "claude-code")
    # A server over HTTP, its secret header from the environment the entry sets.
    assert main(["config", target, "--proxy", "--upstream-url", "https://tools.example.com/mcp",
                 "--upstream-header", "Authorization: Bearer $TOOLS_TOKEN",
                 "--env", "TOOLS_TOKEN=t"]) == 0  # fmt: skip
    entry = json.loads(capsys.readouterr().out)["mcpServers"]["tools.example.com"]
    assert entry["args"][-4:] == ["--upstream-url", "https://tools.example.com/mcp",
                                  "--upstream-header", "Authorization: Bearer $TOOLS_TOKEN"]  # fmt: skip
    assert entry["env"] == {"TOOLS_TOKEN": "t"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "A=b"], "--env is for a proxy's config: add --proxy"),
        (
            ["--proxy", "--inline-wait", "70", "--", "x"],
            "--inline-wait must be seconds from 0 to 50",
        ),
        (["--proxy", "--env", "NOEQUALS", "--", "x"], "--env must look like NAME=VALUE"),
        (["--proxy", "--policy", "/nonexistent.toml", "--", "x"], "cannot read the policy file"),
        (["--proxy", "--upstream-url", "https://h/mcp", "--", "x"], "not both"),
    ],
)
def test_config_refuses_a_proxy_config_that_would_not_work(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["config", "cursor", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_header_may_hold_a_literal_dollar_and_names_a_missing_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    assert parse_header("X-Price: $$5") == ("X-Price", "$5")
    with pytest.raises(ConfigError, match=r"uses \$NOT_SET_ANYWHERE, which is not set"):
        parse_header("Authorization: Bearer $NOT_SET_ANYWHERE")


def test_a_policy_file_that_is_not_text_is_refused_in_words(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(b"\xff\xfe[defaults]\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_policy(str(path))


def test_a_proxy_whose_upstream_does_not_start_says_so_and_exits(tmp_path: Path) -> None:
    done = subprocess.run(
        [*AGENT_TOOLS, "proxy", "--db", str(tmp_path / "p.db"), "--no-ui", "--",
         sys.executable, "-c", "import sys; print('no API key set', file=sys.stderr); sys.exit(1)"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "did not start" in done.stderr
    assert "no API key set" in done.stderr  # the upstream's own words reach the log


# -- a real proxy in front of a real upstream ------------------------------------------------


class Marks:
    """What the upstream saw, from its marks file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def of(self, event: str, tool: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.all() if m["event"] == event and tool in (None, m["tool"])]

    async def wait(self, event: str, tool: str, count: int = 1) -> list[dict[str, Any]]:
        return await eventually(
            lambda: len(self.of(event, tool)) >= count and self.of(event, tool),
            what=f"the upstream saw {count} {event} of {tool}",
        )


class ProxyRunner:
    """``agent-tools proxy`` in front of tests/proxy_upstream.py, over stdio or HTTP."""

    def __init__(self, tmp_path: Path, transport: str, *options: str) -> None:
        self.tmp_path, self.transport, self.options = tmp_path, transport, list(options)
        self.db = tmp_path / "proxy.db"
        self.marks = Marks(tmp_path / "marks.jsonl")
        self.pidfile = tmp_path / "proxy.pid"
        self.stderr = tmp_path / "proxy.stderr"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "UPSTREAM_MARKS": str(self.marks.path), "PYTHONPATH": str(ROOT)}

    def argv(self) -> list[str]:
        # --port 0: the proxy binds a free port itself and logs it (a port picked here
        # could be taken by another test's server before the proxy binds it).
        extra = ["--http", "--port", "0"] if self.transport == "http" else []
        return [*AGENT_TOOLS, "proxy", "--db", str(self.db), "--no-ui", *extra, *self.options,
                "--", *UPSTREAM]  # fmt: skip

    def start_http(self) -> None:
        logged_before = self.stderr.read_text() if self.stderr.exists() else ""
        with self.stderr.open("ab") as errors:
            self.proc = subprocess.Popen(self.argv(), cwd=ROOT, env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=errors)  # fmt: skip
        self.port = listening_port(self.proc, self.stderr, logged_before)

    @contextlib.asynccontextmanager
    async def client(self, *extensions: Any, **options: Any) -> AsyncIterator[Client]:
        """A client of the proxy; ``options`` go to ``Client`` (``mode``,
        ``message_handler``)."""
        if self.transport == "http":
            if self.proc is None or self.proc.poll() is not None:
                self.start_http()
            async with (
                create_mcp_http_client() as http,
                Client(streamable_http_client(f"http://127.0.0.1:{self.port}/mcp",
                                              http_client=http),
                       extensions=list(extensions), **options) as client,
            ):  # fmt: skip
                yield client
            return
        # stdio: the client starts the proxy; a shell records its pid for SIGKILL.
        script = f'echo $$ > "{self.pidfile}"; exec "$@" 2>>"{self.stderr}"'
        params = StdioServerParameters(command="/bin/sh", args=["-c", script, "sh", *self.argv()],
                                       env=self.env, cwd=str(ROOT))  # fmt: skip
        async with Client(params, extensions=list(extensions), **options) as client:
            yield client

    def kill(self) -> None:
        """SIGKILL the proxy (its upstream child then sees its stdin close)."""
        if self.transport == "http":
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        else:
            os.kill(int(self.pidfile.read_text()), signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def proxy_for(tmp_path: Path, transport: str, *options: str) -> Iterator[ProxyRunner]:
    runner = ProxyRunner(tmp_path, transport, *options)
    try:
        yield runner
    finally:
        runner.stop()


def answer(result: Any) -> dict[str, Any]:
    """What a client reads of a tool result: content, structured content, isError."""
    data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {k: data.get(k) for k in ("content", "structuredContent", "isError")}


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    return result.structured_content or {}


@pytest.mark.anyio
async def test_quick_answers_come_back_inline_exactly_as_the_upstream_gave_them(
    tmp_path: Path, transport: str
) -> None:
    calls = [("echo", {"text": "hello"}), ("weather", {"city": "Oslo"}),
             ("fail", {"reason": "disk full"})]  # fmt: skip
    direct_env = {**os.environ, "UPSTREAM_MARKS": str(tmp_path / "direct.jsonl")}
    params = StdioServerParameters(command=UPSTREAM[0], args=UPSTREAM[1:], env=direct_env)
    async with Client(params) as upstream:
        direct = [answer(await upstream.call_tool(tool, args)) for tool, args in calls]
        direct_tools = {t.name: t for t in (await upstream.list_tools()).tools}
    with proxy_for(tmp_path, transport, "--inline-wait", "30") as proxy:
        async with proxy.client() as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            proxied = [answer(await client.call_tool(tool, args)) for tool, args in calls]
    assert proxied == direct
    assert proxied[1]["structuredContent"] == {"city": "Oslo", "celsius": 21.5}
    assert proxied[2]["isError"] is True and "disk full" in proxied[2]["content"][0]["text"]
    # The upstream's tools under their own names, descriptions and input schemas, beside
    # the four tools that rejoin a call.
    assert {"probe_status", "await_result", "list_jobs", "cancel_job"} <= set(listed)
    for name, tool in direct_tools.items():
        assert listed[name].description == tool.description
        assert listed[name].input_schema == tool.input_schema
    assert "start_job" not in listed and "schedule" not in listed
    # Every call carried its job id as an idempotency key.
    keys = [m["key"] for m in proxy.marks.all()]
    assert len(keys) == 3 and all(k and k.startswith("proxy_upstream-") for k in keys)


@pytest.mark.anyio
async def test_a_slow_call_answers_with_a_job_id_and_await_result_brings_the_answer(
    tmp_path: Path, transport: str
) -> None:
    with proxy_for(tmp_path, transport, "--inline-wait", "0.2") as proxy:
        async with proxy.client() as client:
            started = await call(client, "slow", {"seconds": 1.5, "label": "report"})
            assert started["status"] == "running" and started["tool"] == "slow"
            assert "await_result" in started["message"]
            done = await call(client, "await_result",
                              {"job_ids": [started["job_id"]], "timeout_s": 30})  # fmt: skip
    [job] = done["done"]
    assert job["status"] == "completed"
    assert job["result"]["content"] == [{"type": "text", "text": "slow done: report"}]
    assert job["result"]["isError"] is False


@pytest.mark.anyio
async def test_a_proxy_killed_mid_call_reissues_the_call_after_a_restart(
    tmp_path: Path, transport: str
) -> None:
    with proxy_for(tmp_path, transport, "--inline-wait", "0") as proxy:
        async with contextlib.AsyncExitStack() as first:
            client = await first.enter_async_context(proxy.client())
            started = await call(client, "slow", {"seconds": 2, "label": "survives"})
            [seen] = await proxy.marks.wait("start", "slow")
            proxy.kill()  # while the upstream call is in flight
            with contextlib.suppress(Exception):
                await first.aclose()
        async with proxy.client() as client:
            done = await call(client, "await_result",
                              {"job_ids": [started["job_id"]], "timeout_s": 45})  # fmt: skip
    [job] = done["done"]
    assert job["result"]["content"][0]["text"] == "slow done: survives"
    starts = proxy.marks.of("start", "slow")
    assert len(starts) == 2, starts  # issued, then issued again by the restarted proxy
    assert starts[0]["key"] == starts[1]["key"] == started["job_id"] == seen["key"]
    assert starts[0]["pid"] != starts[1]["pid"]  # a new upstream process


@pytest.mark.anyio
async def test_an_upstream_that_dies_mid_call_fails_that_call_and_is_restarted(
    tmp_path: Path, transport: str
) -> None:
    with proxy_for(tmp_path, transport, "--inline-wait", "30") as proxy:
        async with proxy.client() as client:
            crashed = await client.call_tool("crash", {})
            assert crashed.is_error
            text = crashed.content[0].text  # type: ignore[union-attr]
            assert "crash failed" in text and "during the call" in text, text
            # The next call reaches a restarted upstream.
            echoed = await eventually(
                lambda: client.call_tool("echo", {"text": "again"}),
                what="the restarted upstream answers",
            )
            assert echoed.content[0].text == "echo: again"  # type: ignore[union-attr]
    pids = {m["pid"] for m in proxy.marks.all()}
    assert len(pids) == 2
    assert "went away" in proxy.stderr.read_text()


@pytest.mark.anyio
async def test_cancel_job_cancels_the_call_upstream(tmp_path: Path, transport: str) -> None:
    with proxy_for(tmp_path, transport, "--inline-wait", "0") as proxy:
        async with proxy.client() as client:
            started = await call(client, "slow", {"seconds": 600, "label": "never"})
            await proxy.marks.wait("start", "slow")
            cancelled = await call(client, "cancel_job", {"job_id": started["job_id"]})
            assert cancelled["status"] == "cancelled"
            [mark] = await proxy.marks.wait("cancelled", "slow")
            assert mark["key"] == started["job_id"]
            # The upstream is still there for the next call (in the background: no wait).
            echoed = await call(client, "echo", {"text": "still here"})
            done = await call(client, "await_result", {"job_ids": [echoed["job_id"]]})
            assert done["done"][0]["result"]["content"][0]["text"] == "echo: still here"
    assert not proxy.marks.of("done", "slow")


@pytest.mark.anyio
async def test_upstream_progress_becomes_the_jobs_progress(tmp_path: Path) -> None:
    with proxy_for(tmp_path, "stdio", "--inline-wait", "0") as proxy:
        async with proxy.client() as client:
            started = await call(client, "steps", {"count": 2, "pause_s": 600})

            async def progress() -> dict[str, Any] | None:
                [job] = (await call(client, "probe_status", {"job_ids": [started["job_id"]]}))[
                    "jobs"
                ]
                return job.get("progress")

            seen = await eventually(progress, what="the job's progress shows the upstream's")
            assert seen["message"] == "step 1 of 2" and seen["fraction"] == 0.5
            # await_result passes it on in its own progress notifications (every 5 s).
            heard: list[str] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                heard.append(message or "")

            await client.call_tool(
                "await_result", {"job_ids": [started["job_id"]], "timeout_s": 7},
                progress_callback=on_progress,
            )  # fmt: skip
            assert any(f"{started['job_id']}: step 1 of 2" in m for m in heard), heard
            await call(client, "cancel_job", {"job_id": started["job_id"]})


@pytest.mark.anyio
async def test_fifty_calls_at_once_all_come_back(tmp_path: Path, transport: str) -> None:
    with proxy_for(tmp_path, transport, "--inline-wait", "30") as proxy:
        async with proxy.client() as client:
            results = await asyncio.gather(
                *(client.call_tool("echo", {"text": f"n{i}"}) for i in range(50))
            )
    texts = sorted(r.content[0].text for r in results)  # type: ignore[union-attr]
    assert texts == sorted(f"echo: n{i}" for i in range(50))
    assert len({m["key"] for m in proxy.marks.all()}) == 50  # one job each


@pytest.mark.anyio
async def test_the_policy_retries_backgrounds_and_limits_per_tool(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[tools.fail]\nretry = true\nmax_attempts = 2\n\n"
        "[tools.echo]\nbackground = true\n\n"
        "[tools.slow]\nconcurrency = 1\n\n"
        "[tools.steps]\ninline_wait_s = 0.2\n\n"
        "[tools.ecko]\nretry = true\n"
    )
    with proxy_for(tmp_path, "stdio", "--inline-wait", "30", "--policy", str(policy)) as proxy:
        async with proxy.client() as client:
            # steps' own inline wait (0.2 s), not the default (30 s): a job id comes back
            stepping = await call(client, "steps", {"count": 3, "pause_s": 1})
            assert stepping["status"] == "running" and "await_result" in stepping["message"]
            failed = await client.call_tool("fail", {"reason": "flaky"})
            assert failed.is_error
            # retried once: both attempts carried the same key
            starts = proxy.marks.of("start", "fail")
            assert len(starts) == 2 and starts[0]["key"] == starts[1]["key"]
            echoed = await call(client, "echo", {"text": "later"})
            assert echoed["status"] in ("running", "completed") and "job_id" in echoed
            done = await call(client, "await_result", {"job_ids": [echoed["job_id"]]})
            assert done["done"][0]["result"]["content"][0]["text"] == "echo: later"
            both = await asyncio.gather(
                client.call_tool("slow", {"seconds": 0.3, "label": "a"}),
                client.call_tool("slow", {"seconds": 0.3, "label": "b"}),
            )
            assert {r.content[0].text for r in both} == {"slow done: a", "slow done: b"}  # type: ignore[union-attr]
    order = [m["event"] for m in proxy.marks.all() if m["tool"] == "slow"]
    assert order == ["start", "done", "start", "done"]  # one at a time
    # A tool the policy names and the upstream lacks (a typo) is pointed out.
    assert "the policy names the tool 'ecko', which the upstream does not have" in (
        proxy.stderr.read_text()
    )


@pytest.mark.anyio
async def test_a_changed_upstream_tool_list_reaches_the_client(tmp_path: Path) -> None:
    with proxy_for(tmp_path, "stdio", "--inline-wait", "30") as proxy:
        async with proxy.client() as client, client.listen(tools_list_changed=True) as events:
            assert "shout" not in {t.name for t in (await client.list_tools()).tools}
            await call(client, "grow", {"name": "shout"})
            with anyio.fail_after(30):  # the proxy passes the upstream's news on
                event = await anext(aiter(events))
            assert type(event).__name__ == "ToolsListChanged"
            tools = await client.list_tools(cache_mode="refresh")
            assert "shout" in {t.name for t in tools.tools}
            shouted = await client.call_tool("shout", {"text": "hi"})
            assert shouted.content[0].text == "shout: hi"  # type: ignore[union-attr]


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_changed_upstream_tool_list_reaches_a_2025_11_25_client(
    tmp_path: Path, transport: str
) -> None:
    # Claude Desktop, Cursor and the TypeScript SDK 1.x speak 2025-11-25: they hear of a
    # new tool list through `notifications/tools/list_changed` on their connection.
    heard = asyncio.Event()

    async def on_message(message: Any) -> None:
        if type(message).__name__ == "ToolListChangedNotification":
            heard.set()

    with proxy_for(tmp_path, transport, "--inline-wait", "30") as proxy:
        async with proxy.client(mode="legacy", message_handler=on_message) as client:
            assert "shout" not in {t.name for t in (await client.list_tools()).tools}
            await call(client, "grow", {"name": "shout"})
            with anyio.fail_after(30):
                await heard.wait()
            tools = await client.list_tools(cache_mode="refresh")
            assert "shout" in {t.name for t in tools.tools}


@pytest.mark.anyio
async def test_a_tasks_client_gets_a_task_whose_result_is_the_upstreams_answer(
    tmp_path: Path,
) -> None:
    with proxy_for(tmp_path, "http", "--inline-wait", "0.2") as proxy:
        async with proxy.client(TasksClient()) as client:
            handle = await start_task(client, "slow", {"seconds": 1, "label": "task"})
            data = handle.model_dump(by_alias=True, mode="json")
            assert data["resultType"] == "task", data

            async def finished() -> dict[str, Any] | None:
                task = await get_task(client, data["taskId"])
                return task if task["status"] == "completed" else None

            task = await eventually(finished, what="the task completes")
    assert task["result"]["content"] == [{"type": "text", "text": "slow done: task"}]
    assert task["result"]["isError"] is False


def test_marks_carry_the_idempotency_key_name() -> None:
    # The key name is part of the contract with upstream servers: keep it stable.
    assert IDEMPOTENCY_KEY == "agent-tools/idempotency-key"


@pytest.mark.anyio
async def test_an_upstream_over_http_with_headers_is_wrapped_and_reconnected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = Listening(lambda port: [*UPSTREAM, "--http", str(port)],
                         tmp_path / "upstream.stderr", {"UPSTREAM_MARKS": str(tmp_path / "marks.jsonl")})  # fmt: skip
    upstream.start()
    runner = ProxyRunner(tmp_path, "stdio")
    runner.argv = lambda: [  # type: ignore[method-assign]
        *AGENT_TOOLS, "proxy", "--db", str(runner.db), "--no-ui", "--inline-wait", "0.5",
        "--upstream-url", upstream.url, "--upstream-header", "X-Test: ${PROXY_TEST_HEADER}",
    ]  # fmt: skip
    monkeypatch.setenv("PROXY_TEST_HEADER", "from-the-environment")
    try:
        async with runner.client() as client:
            echoed = await client.call_tool("echo", {"text": "over http"})
            assert echoed.content[0].text == "echo: over http"  # type: ignore[union-attr]
            started = await call(client, "slow", {"seconds": 1.5, "label": "remote"})
            done = await call(client, "await_result", {"job_ids": [started["job_id"]]})
            assert done["done"][0]["result"]["content"][0]["text"] == "slow done: remote"
            # The upstream goes away: a call fails in words; once it is back, calls work.
            upstream.kill()
            failed = await client.call_tool("echo", {"text": "nobody there"})
            assert failed.is_error
            upstream.start()

            async def answered() -> bool:
                result = await client.call_tool("echo", {"text": "back"})
                return not result.is_error and result.content[0].text == "echo: back"  # type: ignore[union-attr]

            await eventually(answered, what="the proxy reaches the restarted upstream")
    finally:
        upstream.kill()
    marks = runner.marks.all()
    assert {m["x_test"] for m in marks} == {"from-the-environment"}  # the header, expanded
    assert len({m["pid"] for m in marks}) == 2
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("proxy.db*"))
    assert b"from-the-environment" not in stored  # headers are never written to the store


@pytest.mark.anyio
async def test_an_upstream_answer_with_a_job_id_of_its_own_is_not_taken_for_ours(
    tmp_path: Path,
) -> None:
    with proxy_for(tmp_path, "http", "--inline-wait", "30") as proxy:
        async with proxy.client(TasksClient()) as client:
            answer = await start_task(client, "job_like", {})
    data = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert data.get("resultType") != "task", data  # the upstream's answer, not a task
    assert data["structuredContent"] == {"job_id": "not-ours-7", "status": "running"}


def test_the_proxys_own_settings_do_not_reach_the_upstream(tmp_path: Path) -> None:
    env = {**os.environ, "UPSTREAM_MARKS": str(tmp_path / "marks.jsonl"),
           "AGENT_TOOLS_SECRET": "link-signing-secret", "UPSTREAM_API_KEY": "k"}  # fmt: skip

    async def one_call() -> None:
        params = StdioServerParameters(command=AGENT_TOOLS[0], args=[
            *AGENT_TOOLS[1:], "proxy", "--db", str(tmp_path / "p.db"), "--no-ui", "--",
            *UPSTREAM], env=env, cwd=str(ROOT))  # fmt: skip
        async with Client(params) as client:
            await client.call_tool("echo", {"text": "x"})

    anyio.run(one_call)
    [mark] = Marks(tmp_path / "marks.jsonl").all()
    assert mark["agent_tools_env"] == []


def test_proxy_settings_that_cannot_work_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    db = str(tmp_path / "p.db")
    cases = {
        "uses $NOT_SET_ANYWHERE, which is not set": ["--upstream-url", "http://h/mcp",
            "--upstream-header", "Authorization: Bearer $NOT_SET_ANYWHERE"],
        "leave out --no-worker": ["--no-worker", "--", "x"],
        "--upstream-header goes with --upstream-url": ["--upstream-header", "A: b", "--", "x"],
        "not both": ["--upstream-url", "http://h/mcp", "--", "x"],
    }  # fmt: skip
    for message, args in cases.items():
        assert main(["proxy", "--db", db, "--no-ui", *args]) == 2
        assert message in capsys.readouterr().err


def test_config_makes_a_script_given_by_a_relative_path_absolute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "server.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert main(["config", "claude-desktop", "--proxy", "--", "python3", "server.py",
                 "--flag"]) == 0  # fmt: skip
    [entry] = json.loads(capsys.readouterr().out)["mcpServers"].values()
    assert entry["args"][-3:] == ["python3", str(tmp_path / "server.py"), "--flag"]


@pytest.mark.anyio
async def test_a_call_past_its_policy_timeout_is_cancelled_upstream_and_fails(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[tools.slow]\ntimeout_s = 0.5\n")
    with proxy_for(tmp_path, "stdio", "--inline-wait", "30", "--policy", str(policy)) as proxy:
        async with proxy.client() as client:
            answer = await client.call_tool("slow", {"seconds": 600, "label": "stuck"})
            [mark] = await proxy.marks.wait("cancelled", "slow")
    assert answer.is_error
    text = answer.content[0].text  # type: ignore[union-attr]
    assert "did not answer within 0.5 s" in text and "cancelled upstream" in text, text
    assert mark["label"] == "stuck"
