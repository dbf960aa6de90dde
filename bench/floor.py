"""The official SDK's floor: an ``MCPServer`` whose ``start_job`` does no work at all.

It answers each call at once with a completed job, in the shape ``agent-tools`` gives,
over the same streamable HTTP app, uvicorn and heap settings as ``agent-tools serve
--http``. ``bench/mcp.py`` drives it with the same clients as the real server: what it
measures is what the SDK and uvicorn alone cost per call on this machine, the ceiling
any server built on them has (no store, no worker, no job).

    python bench/floor.py --port 8766
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and bench/mcp.py would
# shadow the `mcp` package: look in the project root instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import uvicorn  # noqa: E402
from mcp.server._otel import OpenTelemetryMiddleware  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402

from agent_tools.serving import settle_heap  # noqa: E402


def floor_server() -> MCPServer:
    server = MCPServer("floor", instructions="The SDK's floor: start_job does nothing.")
    # As agent-tools does without --otel: no span per message.
    server.middleware[:] = [
        m for m in server.middleware if not isinstance(m, OpenTelemetryMiddleware)
    ]
    ids = itertools.count()

    @server.tool()
    async def start_job(  # async: the SDK runs a plain def in a thread, a hop per call
        kind: str, args: dict[str, Any] | None = None, wait_s: float | None = None
    ) -> dict[str, Any]:
        """Answer at once with a completed job."""
        return {
            "job_id": f"{kind}-{next(ids)}",
            "status": "completed",
            "result": (args or {}).get("i"),
            "next": "The job is done; its result is above.",
        }

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    app = floor_server().streamable_http_app()
    settle_heap()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", log_config=None)


if __name__ == "__main__":
    main()
