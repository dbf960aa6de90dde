"""Tool arguments checked before a tool runs, so a model gets one plain answer.

The SDK drops arguments a tool does not take and reports type errors in a
validation library's words (with its documentation links). This middleware checks
each ``tools/call`` against the tool's own signature first: an unknown argument is
refused, naming the ones allowed; a wrong value says which argument, what is wrong
and what was given. Arguments a client sent as JSON text (Claude Desktop does, for
lists and objects) are read as JSON, as the SDK does.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict

from agent_tools.errors import describe_validation


def _model(name: str, fn: Callable[..., Any]) -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.annotation is Context or param.name == "ctx":
            continue
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return pydantic.create_model(f"{name}_arguments", __config__=config, **fields)


def _as_json(arguments: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(arguments)
    for key, value in arguments.items():
        if isinstance(value, str) and value[:1] in "[{":
            try:
                out[key] = json.loads(value)
            except ValueError:
                continue
    return out


class ArgumentCheck:
    """Server middleware: refuse a ``tools/call`` whose arguments do not fit its tool."""

    def __init__(self) -> None:
        self.models: dict[str, type[pydantic.BaseModel]] = {}

    def add(self, name: str, fn: Callable[..., Any]) -> None:
        self.models[name] = _model(name, fn)

    def problem(self, name: str, arguments: object) -> str | None:
        """What is wrong with ``arguments`` for tool ``name``, or None."""
        model = self.models.get(name)
        if model is None:
            return None  # not ours: the SDK answers for unknown tools
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            return f"{name}: arguments must be an object, got {type(arguments).__name__}"
        unknown = sorted(set(arguments) - set(model.model_fields))
        if unknown:
            allowed = ", ".join(model.model_fields) or "none"
            return (
                f"{name} does not take {', '.join(repr(u) for u in unknown)}; "
                f"its arguments are: {allowed}"
            )
        for attempt in (arguments, _as_json(arguments)):
            try:
                model.model_validate(attempt)
                return None
            except pydantic.ValidationError as exc:
                error = exc
        return describe_validation(error, f"{name} got a bad argument")

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method != "tools/call" or not isinstance(ctx.params, Mapping):
            return await call_next(ctx)
        problem = self.problem(str(ctx.params.get("name")), ctx.params.get("arguments"))
        if problem is None:
            return await call_next(ctx)
        result: dict[str, Any] = {"content": [{"type": "text", "text": problem}], "isError": True}
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            result["resultType"] = "complete"
        return result
