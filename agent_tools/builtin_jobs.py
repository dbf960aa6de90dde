"""Job kinds that ship with agent-tools (always loaded)."""

from __future__ import annotations

from typing import Any

from promises import Context, Never, durable


@durable(name="approval", retry=Never())
async def approval(
    ctx: Context, question: str, details: dict[str, Any] | None = None, deadline_hours: float = 48
) -> dict[str, Any]:
    """Ask a person to approve or reject something; completes with their decision.

    While it waits, probe_status shows the approval id; a person decides with
    `agent-tools approve ID` / `agent-tools reject ID` (or the approval page)."""
    decision = ctx.promise(
        timeout=deadline_hours * 3600, data={"question": question, "details": details}
    )
    try:
        answer = await decision
    except Exception as exc:  # the deadline passed with no decision
        return {"approved": False, "decided": False, "reason": str(exc)}
    return {"decided": True, **(answer if isinstance(answer, dict) else {"approved": bool(answer)})}


@durable(name="sleep", retry=Never())
async def sleep(ctx: Context, seconds: float) -> dict[str, float]:
    """Wait durably for some seconds (survives restarts), then complete."""
    await ctx.sleep(seconds)
    return {"slept_s": seconds}
