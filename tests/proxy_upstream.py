"""An upstream MCP server for the proxy's tests, written with the ``mcp`` SDK as any
existing server is: a fast tool, a slow one (its duration a parameter), one that fails,
one that reports progress, one that answers with structured content, and one that
kills its own process mid-call.

``python tests/proxy_upstream.py`` serves stdio; ``--http PORT`` streamable HTTP.
With ``$UPSTREAM_MARKS`` set to a file, every call appends one JSON line
(``{"event": "start"|"done"|"cancelled", "tool", "key", "pid"}``, ``key`` being the
idempotency key the proxy sent in ``_meta``), so tests wait on what the upstream saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

IDEMPOTENCY_KEY = "agent-tools/idempotency-key"

server = MCPServer("upstream-test", version="1.0.0")


def mark(event: str, tool: str, ctx: Context, **extra: Any) -> None:
    path = os.environ.get("UPSTREAM_MARKS")
    if not path:
        return
    key = (ctx.request_context.meta or {}).get(IDEMPOTENCY_KEY)
    headers = ctx.headers or {}
    ours = sorted(k for k in os.environ if k.startswith("AGENT_TOOLS_"))
    line = {"event": event, "tool": tool, "key": key, "pid": os.getpid(),
            "x_test": headers.get("x-test"), "agent_tools_env": ours, **extra}  # fmt: skip
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


@server.tool()
async def echo(text: str, ctx: Context) -> str:
    """Answer at once with the text given."""
    mark("start", "echo", ctx)
    return f"echo: {text}"


@server.tool()
async def slow(seconds: float, label: str, ctx: Context) -> str:
    """Take `seconds` seconds, then answer with the label."""
    mark("start", "slow", ctx, label=label)
    try:
        await asyncio.sleep(seconds)
    except BaseException:
        mark("cancelled", "slow", ctx, label=label)
        raise
    mark("done", "slow", ctx, label=label)
    return f"slow done: {label}"


@server.tool()
async def fail(reason: str, ctx: Context) -> str:
    """Fail with the reason given (a tool error, isError)."""
    mark("start", "fail", ctx)
    raise ToolError(f"it failed: {reason}")


@server.tool()
async def steps(count: int, ctx: Context, pause_s: float = 0.0) -> str:
    """Report progress `count` times, pausing `pause_s` after each, then answer."""
    mark("start", "steps", ctx)
    for i in range(1, count + 1):
        await ctx.report_progress(i, count, f"step {i} of {count}")
        await asyncio.sleep(pause_s)
    return f"{count} steps done"


class Weather(BaseModel):
    city: str
    celsius: float


@server.tool()
async def weather(city: str, ctx: Context) -> Weather:
    """Structured content: the weather in a city (made up)."""
    mark("start", "weather", ctx)
    return Weather(city=city, celsius=21.5)


@server.tool()
async def job_like(ctx: Context) -> dict[str, str]:
    """Answer with a job id of this server's own (one the proxy must not take for its own)."""
    mark("start", "job_like", ctx)
    return {"job_id": "not-ours-7", "status": "running"}


@server.tool()
async def crash(ctx: Context, after_s: float = 0.0) -> str:
    """Kill this server's own process mid-call (after `after_s` seconds)."""
    mark("start", "crash", ctx)
    await asyncio.sleep(after_s)
    os._exit(3)


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Add a tool called `name` (it echoes), and tell the clients the list changed."""

    async def added(text: str) -> str:
        return f"{name}: {text}"

    server.add_tool(added, name=name, description=f"Added at run time: {name}.")
    await ctx.notify_tools_changed()  # 2026-07-28 listeners
    await ctx.session.send_tool_list_changed()  # 2025-11-25 sessions
    return f"added {name}"


if __name__ == "__main__":
    print(f"upstream-test started (pid {os.getpid()})", file=sys.stderr, flush=True)
    if len(sys.argv) == 3 and sys.argv[1] == "--http":  # --http 0: any free port, logged
        import socket

        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(sys.argv[2])))
        sock.listen(128)
        port = sock.getsockname()[1]
        print(f"upstream-test listening at http://127.0.0.1:{port}/mcp", file=sys.stderr,
              flush=True)  # fmt: skip
        config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    else:
        server.run()
