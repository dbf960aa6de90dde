"""Job kinds that ship with agent-tools (always loaded)."""

from __future__ import annotations

from typing import Any

from promises import Context, Never, StoredError, durable


@durable(name="approval", retry=Never())
async def approval(
    ctx: Context, question: str, details: dict[str, Any] | None = None, deadline_hours: float = 48
) -> dict[str, Any]:
    """Ask a person to approve or reject something; completes with their decision.

    While it waits, probe_status shows the approval id and a link; a person decides with
    `agent-tools approve ID` / `agent-tools reject ID`, the approval page, or in the chat
    of a client that supports it. After deadline_hours without a decision it completes
    with decided=false."""
    asked = ctx.approval(question, details=details, timeout=deadline_hours * 3600)
    try:
        decision = await asked
    except StoredError:  # the deadline passed with no decision
        return {"approved": False, "decided": False, "reason": "no decision by the deadline"}
    return {
        "decided": True,
        "approved": decision.approved,
        "comment": decision.comment,
        "by": decision.by,
    }


@durable(name="sleep", retry=Never())
async def sleep(ctx: Context, seconds: float) -> dict[str, float]:
    """Wait durably for some seconds (survives restarts), then complete."""
    await ctx.sleep(seconds)
    return {"slept_s": seconds}
