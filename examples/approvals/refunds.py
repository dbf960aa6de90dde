"""Human in the loop: a refund above a threshold waits for a person's decision.

The person decides with ``agent-tools approve|reject JOB_ID``, in-band through the
MCP Tasks extension (the job shows as ``input_required``; ``tasks/update`` answers),
or on the approval page. The decision is durable: made while the server is down, it
is seen after the restart; made after the deadline, it is refused and the refund is
not issued.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from promises import Context, StoredError, current_step, durable


def issue_refund(order_id: str, amount_eur: float) -> dict[str, Any]:
    """The payment call (here: a ledger file), idempotent by the step's id."""
    step = current_step()
    key = step.id if step else order_id
    path = os.environ.get("REFUNDS_LEDGER", "refunds-ledger.jsonl")
    if os.path.exists(path):
        with open(path) as ledger:
            for line in ledger:
                if json.loads(line)["key"] == key:
                    return {"refund_id": key, "duplicate": True}  # already issued: do not pay twice
    with open(path, "a") as ledger:
        ledger.write(
            json.dumps({"key": key, "order_id": order_id, "amount_eur": amount_eur}) + "\n"
        )
    return {"refund_id": key, "duplicate": False}


# --8<-- [start:refund]
@durable(name="refunds.refund")
async def refund(
    ctx: Context, order_id: str, amount_eur: float, reason: str,
    threshold_eur: float = 100.0, decision_hours: float = 48.0,
) -> dict[str, Any]:  # fmt: skip
    """Refund an order; above the threshold a person must approve first.

    Args:
        order_id: The order to refund. Example: "4411"
        amount_eur: How much to refund, in euros (a number). Example: 120.5
        reason: Why, in a few words, shown to the person who approves. Example:
            "arrived broken"
        threshold_eur: Refunds above this many euros need a person's approval.
            Example: 100. Default: 100.
        decision_hours: Hours the person has to decide; without a decision the refund
            is not made. Example: 24. Default: 48.
    """
    decided_by = "policy"
    if amount_eur > threshold_eur:
        question = f"Refund {amount_eur:.2f} EUR for order {order_id}?"
        details = {"order_id": order_id, "amount_eur": amount_eur, "reason": reason}
        asked = ctx.approval(question, details=details, timeout=timedelta(hours=decision_hours))
        ctx.progress(f"waiting for a person to approve {asked.id}")
        try:
            decision = await asked
        except StoredError:  # the deadline passed without a decision
            return {"status": "expired", "order_id": order_id}
        if not decision.approved:
            return {"status": "rejected", "order_id": order_id, "comment": decision.comment}
        decided_by = "person"
    receipt = await ctx.run(issue_refund, order_id, amount_eur)
    return {"status": "refunded", "order_id": order_id, "decided_by": decided_by, **receipt}


# --8<-- [end:refund]
