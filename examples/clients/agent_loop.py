"""An agent that uses agent-tools *as an MCP client*: an OpenAI model (function
calling) starts durable jobs with start_job and rejoins them with await_result.

    python examples/clients/agent_loop.py --offline      # a scripted stand-in model
    python examples/clients/agent_loop.py "How warm was Lisbon in January 2025?"

The server is launched over stdio (``agent-tools serve``); the model, key and endpoint
come from OPENAI_MODEL, OPENAI_API_KEY and OPENAI_BASE_URL (``--offline`` uses a local
stand-in that starts a short job and rejoins it).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from mcp import Client, StdioServerParameters
from openai import AsyncOpenAI

SYSTEM = (
    "You can run long work as durable background jobs. Start one with start_job, keep "
    "its job_id, then call await_result until it is done (each call waits up to 50 s). "
    "Answer from the job's result."
)
TOOLS_FOR_THE_MODEL = (
    "start_job",
    "probe_status",
    "await_result",
    "list_jobs",
    "cancel_job",
    "schedule",
)


def stdio_server(*jobs_modules: str) -> StdioServerParameters:
    from pathlib import Path

    args = ["serve"]
    for module in jobs_modules:
        args += ["--jobs", module]
    command = str(Path(sys.executable).parent / "agent-tools")  # installed beside this Python
    return StdioServerParameters(command=command, args=args, env=dict(os.environ))


# --8<-- [start:loop]
async def run_agent(task: str, server: StdioServerParameters | str, max_turns: int = 20) -> str:
    model = AsyncOpenAI(api_key=os.environ.get("OPENAI_API_KEY", "unset"),
                        base_url=os.environ.get("OPENAI_BASE_URL") or None)  # fmt: skip
    async with Client(server) as mcp:
        tools = [
            {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.input_schema}}
            for t in (await mcp.list_tools()).tools if t.name in TOOLS_FOR_THE_MODEL
        ]  # fmt: skip
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": task},
        ]
        for _ in range(max_turns):
            response = await model.chat.completions.create(
                model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
                messages=messages,
                tools=tools,  # type: ignore[arg-type]
            )
            reply = response.choices[0].message
            messages.append(reply.model_dump(exclude_none=True))
            if not reply.tool_calls:
                return reply.content or ""
            for call in reply.tool_calls:
                result = await mcp.call_tool(
                    call.function.name, json.loads(call.function.arguments or "{}")
                )
                text = (
                    json.dumps(result.structured_content)
                    if result.structured_content
                    else str(result.content)
                )
                messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
    raise RuntimeError(f"no answer after {max_turns} turns")


# --8<-- [end:loop]


def main() -> None:
    from pathlib import Path

    offline = "--offline" in sys.argv[1:]
    words = [w for w in sys.argv[1:] if w != "--offline"]
    question = " ".join(words) or "Sleep a moment in the background, then tell me it is done."
    root = Path(__file__).resolve().parent.parent.parent
    sys.path.insert(0, str(root))
    os.environ.setdefault("PYTHONPATH", str(root))  # the server finds the example jobs
    if not offline:
        if not os.environ.get("OPENAI_API_KEY"):
            raise SystemExit(
                "set OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible "
                "endpoint), or run offline: python examples/clients/agent_loop.py --offline"
            )
        print(asyncio.run(run_agent(question, stdio_server("examples.weather.jobs"))))
        return
    from examples.fakes import FakeOpenAI, agent_loop_script

    with FakeOpenAI(agent_loop_script) as fake:
        os.environ.update(OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="offline")
        print(asyncio.run(run_agent(question, stdio_server("examples.weather.jobs"))))


if __name__ == "__main__":
    main()
