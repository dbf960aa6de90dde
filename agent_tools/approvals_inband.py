"""Deciding a waiting approval in the chat: the elicitation form a client shows, and
how its answer lands on the approval promise — the same durable promise the link,
the CLI and ``tasks/update`` settle, so the first decision stands wherever it came from.
"""

from __future__ import annotations

from typing import Any

from mcp_types import ClientCapabilities

from agent_tools.jobs import JobService
from promises import PromiseError
from promises import decide as decide_approval

#: The form a person fills in (elicitation ``requestedSchema``: flat primitives only).
APPROVAL_FORM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "approved": {
            "type": "boolean",
            "title": "Approve",
            "description": "Check to approve, leave unchecked to reject.",
        },
        "comment": {
            "type": "string",
            "title": "Comment",
            "description": "Optional: why, for the record.",
        },
    },
    "required": ["approved"],
}


def can_elicit(capabilities: ClientCapabilities | None) -> bool:
    """Whether the client declared form elicitation (an empty ``elicitation`` object
    means form mode, per the spec)."""
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None:
        return False
    return elicitation.form is not None or elicitation.url is None


def decision_from(action: str | None, content: Any) -> dict[str, Any] | None:
    """The decision an elicitation answer carries, or None when the person dismissed it
    (the approval then stays open for the link or the CLI)."""
    if (
        action == "accept"
        and isinstance(content, dict)
        and isinstance(content.get("approved"), bool)
    ):
        comment = content.get("comment")
        return {"approved": content["approved"], "comment": comment or None}
    if action == "decline":
        return {"approved": False, "comment": "declined in the chat"}
    return None


def decide(
    service: JobService, approval_id: str, decision: dict[str, Any], by: str = "mcp:elicitation"
) -> bool:
    """Decide the approval; False if it was decided, expired or withdrawn meanwhile
    (the first decision stands) or is not an approval at all."""
    try:
        decide_approval(
            service.store,
            approval_id,
            approved=bool(decision["approved"]),
            comment=decision.get("comment"),
            by=by,
        )
    except PromiseError:
        return False
    return True
