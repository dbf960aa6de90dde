"""Values as people read them, for the pages and the terminal alike: relative times
("in 47 hours", "3 min ago"), durations, a job's arguments written as the call
(``weather.gather(locations=[…], months=["2025-01"])``), and long values folded."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from promises import DurableFunction, Promise

STATUSES = ("running", "waiting", "completed", "failed", "cancelled", "timed_out")
FINISHED = ("completed", "failed", "cancelled", "timed_out")


def ms_of(iso_time: str | None) -> int | None:
    if not iso_time:
        return None
    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp() * 1000)


def duration(ms: float) -> str:
    """12 ms, 1.2 s, 4 min, 3 h 10 min, 2 d 4 h: the two largest units that matter."""
    seconds = max(ms, 0) / 1000
    if seconds < 1:
        return f"{max(ms, 0):.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours, mins = divmod(int(minutes), 60)
    if hours < 24:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(at_ms: int | None, now_ms: int) -> str:
    """'in 47 hours', '3 min ago', 'just now'."""
    if at_ms is None:
        return "—"
    delta = at_ms - now_ms
    if abs(delta) < 5_000:
        return "just now"
    seconds = abs(delta) / 1000
    if seconds < 60:
        text = f"{seconds:.0f} s"
    elif seconds < 3600:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 48 * 3600:
        hours = round(seconds / 3600)
        text = f"{hours} hour{'s' if hours != 1 else ''}"
    else:
        days = round(seconds / 86400)
        text = f"{days} day{'s' if days != 1 else ''}"
    return f"in {text}" if delta > 0 else f"{text} ago"


def local_time(at_ms: int | None) -> str:
    """The time in this machine's zone, to the minute, with the zone's name."""
    if at_ms is None:
        return "—"
    return datetime.fromtimestamp(at_ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def short_json(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_arguments(
    promise: Promise, registry: Mapping[str, DurableFunction] | None = None
) -> tuple[dict[str, Any], list[Any]]:
    """A job's arguments: by name, and by position those whose names are not known here.

    A start stores positional arguments by position only (``{"args": [...], "kwargs":
    {...}}``; the names are the function's, which only a process that loaded the kind
    knows). Where the kind is loaded (``registry``, else every kind this process
    registered) they are bound to its parameters; elsewhere (a CLI without ``--jobs``)
    they are shown by position, never under invented names."""
    try:
        spec = json.loads(promise.param.data) if promise.param.data else {}
    except ValueError:
        return {}, []
    if not isinstance(spec, dict) or "args" not in spec:
        return (spec if isinstance(spec, dict) else {"value": spec}), []
    args, kwargs = list(spec.get("args") or []), dict(spec.get("kwargs") or {})
    fn = spec.get("fn")
    if registry is None:
        from promises.functions import REGISTRY

        registry = REGISTRY
    function = registry.get(fn) if isinstance(fn, str) else None
    if function is not None and args:
        try:
            bound = function.signature.bind(*args, **kwargs).arguments
        except TypeError:  # the function changed since: keep what is stored
            return kwargs, args
        return {k: list(v) if isinstance(v, tuple) else v for k, v in bound.items()}, []
    return kwargs, args


def call_text(
    kind: str | None, arguments: Mapping[str, Any], limit: int = 200, positional: Sequence[Any] = ()
) -> str:
    """``kind("B-2", a=1, b="x")``: positional values first, each value folded to keep the
    whole under ``limit``."""
    each = max(limit // max(len(arguments) + len(positional), 1), 24)
    parts = [short_json(v, each) for v in positional]
    parts += [f"{k}={short_json(v, each)}" for k, v in arguments.items()]
    inner = ", ".join(parts)
    return f"{kind or 'job'}({inner})"


def key_values(value: Any, limit: int = 300) -> list[tuple[str, str]]:
    """Top-level key/value rows for a dict (values folded); one row for anything else."""
    if isinstance(value, dict):
        return [
            (str(k), v if isinstance(v, str) else short_json(v, limit)) for k, v in value.items()
        ]
    if value is None:
        return []
    return [("value", value if isinstance(value, str) else short_json(value, limit))]


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def is_long(text: str, lines: int = 12, chars: int = 1200) -> bool:
    return text.count("\n") >= lines or len(text) > chars
