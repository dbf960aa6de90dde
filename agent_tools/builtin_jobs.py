"""Job kinds that ship with agent-tools (always loaded)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from promises import Context, Never, StoredError, durable

#: The longest wait the built-in kinds take: ten years.
MAX_WAIT_S = 10 * 365 * 86_400


@durable(name="approval", retry=Never())
async def approval(
    ctx: Context,
    question: Annotated[str, Field(min_length=1, max_length=2000)],
    details: dict[str, Any] | None = None,
    deadline_hours: Annotated[float, Field(gt=0, le=MAX_WAIT_S / 3600)] = 48,
) -> dict[str, Any]:
    """Ask a person to approve or reject something; completes with their decision.

    While it waits, probe_status shows the approval id and a link; the person decides
    on that page, with `agent-tools approve ID` / `agent-tools reject ID`, or in the
    chat when the client can show a form.

    Args:
        question: What the person is asked, as one sentence they can answer yes or no.
            Example: "Refund 120 EUR to Ana for order 4411?"
        details: Optional facts shown with the question, as an object. Example:
            {"order": "4411", "amount_eur": 120}
        deadline_hours: Hours (a number, more than 0, at most ten years) the person has
            to decide; after that the job completes with decided false. Example: 24.
            Default: 48.
    """
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
async def sleep(
    ctx: Context, seconds: Annotated[float, Field(ge=0, le=MAX_WAIT_S)]
) -> dict[str, float]:
    """Wait durably for some seconds (it survives restarts), then complete.

    Args:
        seconds: How long to wait, in seconds (a number from 0 to ten years). Example:
            3600 for an hour.
    """
    await ctx.sleep(seconds)
    return {"slept_s": seconds}
