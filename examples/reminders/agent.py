"""The reminder assistant: an OpenAI function-calling agent loop written as a durable job.

"Remind me tomorrow at 9 to call Ana" becomes: model call (a step) -> current_time ->
model call -> schedule (a durable sleep until 09:00 UTC) -> model call -> reminder (a
delivery step) -> model call -> answer. Every model call is checkpointed, so a restart
mid-sleep repeats none of them, and the reminder is delivered once, at its time.

The model, key and endpoint come from OPENAI_MODEL, OPENAI_API_KEY and OPENAI_BASE_URL
(any OpenAI-compatible endpoint). Deliveries are appended to $REMINDERS_OUTBOX (JSON
lines; a real deployment would send a message), keyed by the step id so a retried
delivery is recognisable.

How to run it:

    python examples/reminders/demo.py                 # offline: a scripted stand-in model
    OPENAI_API_KEY=sk-... python examples/reminders/demo.py --model   # a real model

or serve it to an agent: ``agent-tools serve --jobs examples.reminders.agent`` and call
``start_reminders_assistant`` with ``request="Remind me tomorrow at 9 to call Ana"``.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

import openai
from openai import OpenAI

from promises import Context, Exponential, NonRetryableError, current_step, durable

SYSTEM = (
    "You are a reminder assistant. Use current_time to learn the time (UTC), schedule "
    "to wait until the moment a reminder is due, then reminder to deliver it. Answer "
    "briefly once the reminder is delivered."
)
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "current_time", "description": "The current time, ISO-8601 UTC.",
        "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {
        "name": "schedule", "description": "Sleep until a UTC time (ISO-8601, Z), then go on.",
        "parameters": {"type": "object", "properties": {"until_utc": {"type": "string"}},
                       "required": ["until_utc"]}}},
    {"type": "function", "function": {
        "name": "reminder", "description": "Deliver the reminder message to the user now.",
        "parameters": {"type": "object", "properties": {"message": {"type": "string"}},
                       "required": ["message"]}}},
]  # fmt: skip
MAX_TURNS = 12
log = logging.getLogger(__name__)


class ModelUnreachable(Exception):
    """The model's endpoint did not answer (retried by the step's policy)."""


class ModelRefused(NonRetryableError):
    """The endpoint refused the key or the request; retrying will not help."""


HINT = (
    "set OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible endpoint, "
    "OPENAI_MODEL for another model), or try the offline demo: "
    "python examples/reminders/demo.py"
)


def call_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One chat completion (a step: checkpointed, never repeated once it returned)."""
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    client = OpenAI(
        api_key=os.environ.get("OPENAI_API_KEY", "unset"),
        base_url=base_url,
        max_retries=0,  # the step's retry policy does the retrying, durably
    )
    try:
        response = client.chat.completions.create(
            model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
            messages=messages,
            tools=TOOLS,  # type: ignore[arg-type]
        )
    except openai.APIConnectionError as exc:
        where = base_url or "api.openai.com"
        unreachable = ModelUnreachable(f"cannot reach the model at {where} ({exc}); {HINT}")
        raise _logged(unreachable) from exc
    except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
        refused = ModelRefused(f"the model endpoint refused the request ({exc}); {HINT}")
        raise _logged(refused) from exc
    return response.choices[0].message.model_dump(exclude_none=True)


def _logged(error: Exception) -> Exception:
    """Say in the worker's log why a model step failed: the engine retries the step
    without a word, and the hint in the error should reach whoever runs the worker."""
    step = current_step()
    where = f"step {step.id} (attempt {step.attempt})" if step else "a model call"
    log.warning("%s failed with %s: %s", where, type(error).__name__, error)
    return error


def deliver(message: str, at: str) -> dict[str, Any]:
    """Deliver a reminder (here: append to the outbox), keyed by the step id."""
    step = current_step()
    entry = {"id": step.id if step else None, "message": message, "at": at}
    with open(os.environ.get("REMINDERS_OUTBOX", "reminders-outbox.jsonl"), "a") as outbox:
        outbox.write(json.dumps(entry) + "\n")
    return {"delivered": True, "message": message}


class BadToolCall(NonRetryableError):
    pass


def _parse_utc(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadToolCall(f"schedule needs an ISO-8601 time, got {value!r}") from exc
    if when.tzinfo is None:
        raise BadToolCall(f"schedule needs a time zone (Z), got {value!r}")
    return when.astimezone(UTC)


# --8<-- [start:assistant]
# No deadline (timeout=): a reminder months away is as fine as one in a minute.
@durable(name="reminders.assistant", retry=Exponential(max_attempts=5))
async def assistant(ctx: Context, request: str) -> dict[str, Any]:
    """A reminder assistant: understands the request, sleeps until it is due, delivers it."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": request},
    ]
    for turn in range(1, MAX_TURNS + 1):
        reply = await ctx.run(call_model, messages)  # checkpointed model call
        messages.append(reply)
        if not reply.get("tool_calls"):
            return {"answer": reply.get("content"), "model_calls": turn}
        for call in reply["tool_calls"]:
            name, args = call["function"]["name"], json.loads(call["function"]["arguments"] or "{}")
            if name == "current_time":
                result: dict[str, Any] = {"now": (await ctx.now()).isoformat()}
            elif name == "schedule":
                await ctx.sleep_until(_parse_utc(args["until_utc"]))  # durable sleep
                result = {"woke_at": (await ctx.now()).isoformat()}
            elif name == "reminder":
                result = await ctx.run(deliver, args["message"], (await ctx.now()).isoformat())
            else:
                result = {"error": f"unknown tool {name!r}"}
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)}
            )
    raise BadToolCall(f"no answer after {MAX_TURNS} model calls")


# --8<-- [end:assistant]
