"""An agent that uses agent-tools *as an MCP client*: an OpenAI model (function
calling) starts durable jobs with start_job and rejoins them with await_result.

    python examples/clients/agent_loop.py --offline      # a scripted stand-in model
    python examples/clients/agent_loop.py "How warm was Lisbon in January 2025?"

The server is launched over stdio (``agent-tools serve``); the model, key and endpoint
come from OPENAI_MODEL, OPENAI_API_KEY and OPENAI_BASE_URL (``--offline`` uses a local
stand-in that starts a short job and rejoins it). Each tool call the model makes is
printed with what the server answered. With a real model the jobs go to your database
(``--db``, else agent-tools' default, so ``agent-tools jobs`` shows them later); offline
they go to a temporary one unless ``--db`` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
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


#: Called after each tool call with its name, its arguments and the server's answer.
OnCall = Callable[[str, dict[str, Any], dict[str, Any] | str], None]


def stdio_server(*jobs_modules: str, db: Path | None = None) -> StdioServerParameters:
    args = ["serve"] if db is None else ["serve", "--db", str(db)]
    for module in jobs_modules:
        args += ["--jobs", module]
    command = str(Path(sys.executable).parent / "agent-tools")  # installed beside this Python
    return StdioServerParameters(command=command, args=args, env=dict(os.environ))


# --8<-- [start:loop]
async def run_agent(task: str, server: StdioServerParameters | str, max_turns: int = 20,
                    on_call: OnCall | None = None) -> str:  # fmt: skip
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
                arguments = json.loads(call.function.arguments or "{}")
                result = await mcp.call_tool(call.function.name, arguments)
                answer = result.structured_content or str(result.content)
                if on_call is not None:
                    on_call(call.function.name, arguments, answer)
                text = answer if isinstance(answer, str) else json.dumps(answer)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
    raise RuntimeError(f"no answer after {max_turns} turns")


# --8<-- [end:loop]


def show_call(name: str, arguments: dict[str, Any], answer: dict[str, Any] | str) -> None:
    """Print one tool call and the gist of the server's answer."""
    shown = json.dumps(arguments, separators=(", ", ": "))
    if isinstance(answer, str):
        gist = answer
    elif "job_id" in answer:
        gist = f"job {answer['job_id']} ({answer.get('status')})"
    elif "done" in answer:
        jobs = [*answer["done"], *answer.get("pending", [])]
        gist = "; ".join(
            f"job {j['job_id']} {j['status']}"
            + (f": {json.dumps(j['result'])}" if "result" in j else "")
            for j in jobs
        )
    else:
        gist = json.dumps(answer)[:200]
    print(f"the agent called {name} {shown} -> {gist}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("question", nargs="*", help="what to ask the agent")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="a scripted stand-in for the model (no key, no network)",
    )
    parser.add_argument("--db", type=Path, help="the database (default: agent-tools' default; "
                        "offline: a new one in a temporary directory)")  # fmt: skip
    args = parser.parse_args()
    question = (
        " ".join(args.question) or "Sleep a moment in the background, then tell me it is done."
    )
    root = Path(__file__).resolve().parent.parent.parent
    sys.path.insert(0, str(root))
    os.environ.setdefault("PYTHONPATH", str(root))  # the server finds the example jobs
    if not args.offline:
        if not os.environ.get("OPENAI_API_KEY"):
            raise SystemExit(
                "set OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible "
                "endpoint), or run offline: python examples/clients/agent_loop.py --offline"
            )
        server = stdio_server("examples.weather.jobs", db=args.db)
        print(f"agent: {asyncio.run(run_agent(question, server, on_call=show_call))}")
        return
    from examples.fakes import FakeOpenAI, agent_loop_script

    with FakeOpenAI(agent_loop_script) as fake, tempfile.TemporaryDirectory() as scratch:
        db = args.db or Path(scratch) / "agent-loop.db"
        print(f"offline: a scripted stand-in for the model at {fake.url}; "
              f"database {db}{'' if args.db else ' (temporary)'}", flush=True)  # fmt: skip
        print(f'asked the agent: "{question}"', flush=True)
        os.environ.update(OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="offline")
        server = stdio_server("examples.weather.jobs", db=db)
        print(f"agent: {asyncio.run(run_agent(question, server, on_call=show_call))}")


if __name__ == "__main__":
    main()
