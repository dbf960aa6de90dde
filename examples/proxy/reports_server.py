"""A plain MCP server with one slow tool, as many existing servers are: the stand-in
for "a server you already have" in the proxy's before/after (see README.md here).

    python examples/proxy/reports_server.py      # serves stdio
"""

from __future__ import annotations

import asyncio

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("reports", version="1.0.0")


@server.tool()
async def generate_report(topic: str, ctx: Context, seconds: float = 180.0) -> str:
    """Write a report on a topic. Takes a while: `seconds` (3 minutes by default)."""
    for done in range(4):
        await ctx.report_progress(done, 4, f"section {done + 1} of 4")
        await asyncio.sleep(seconds / 4)
    return f"Report on {topic}: 4 sections, all good."


if __name__ == "__main__":
    server.run()
