"""Runs a worker for examples.reminders in its own process, with the OpenAI endpoint
scripted by respx and the clock read from a file the test controls.

    python -m tests.reminders_harness DB CLOCK_FILE MODEL_LOG

The scripted model answers from the conversation so far (not from a call count), so a
restarted process continues the same script; every request is logged with its pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import respx

BASE_URL = "https://llm.test/v1"
WAKE_AT = "2027-01-16T09:00:00Z"


class FileClock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> int:
        return int(self.path.read_text())


def scripted_reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The examples' stand-in model (``examples.fakes.reminder_script``)."""
    from examples.fakes import reminder_script

    return reminder_script(messages)


def chat_completion(message: dict[str, Any]) -> httpx.Response:
    """An OpenAI chat-completion response carrying one assistant ``message``."""
    from examples.fakes import chat_completion as body

    return httpx.Response(200, json=body(message))


def completion(request: httpx.Request, log: Path) -> httpx.Response:
    body = json.loads(request.content)
    with log.open("a") as f:
        f.write(json.dumps({"pid": os.getpid(), "messages": len(body["messages"])}) + "\n")
    return chat_completion(scripted_reply(body["messages"]))


async def main(db: str, clock_file: str, model_log: str) -> None:
    from examples.reminders import agent  # noqa: F401  (registers the job)
    from promises import Runtime, Worker, open_store

    log = Path(model_log)
    with (
        respx.mock(assert_all_called=False) as mock,
        open_store(
            f"sqlite:///{db}", clock=FileClock(Path(clock_file)), poll_interval=0.05
        ) as store,
    ):
        mock.post(f"{BASE_URL}/chat/completions").mock(side_effect=lambda r: completion(r, log))
        await Worker(Runtime(store), poll_interval=0.05).run()


if __name__ == "__main__":
    os.environ.update(
        OPENAI_BASE_URL=BASE_URL, OPENAI_API_KEY="test-key", OPENAI_MODEL="test-model"
    )
    asyncio.run(main(*sys.argv[1:4]))
