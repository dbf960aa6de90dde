"""Errors an agent can act on, and the checks that produce them.

``JobError`` is the one error the tools raise for a request an agent can fix; its
message says what was wrong and what is allowed, in the agent's words. Engine errors
are translated here (``friendly``) so no store internals reach a model: no
milliseconds since the epoch, idempotency keys, or validation-library links.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic

#: Ids an agent chooses (job ids, timer and schedule ids).
MAX_ID_LENGTH = 200
#: Ids the engine makes for steps (``job.3``) and cron ticks (``schedule@1767225600000``).
_RESERVED_ENDING = re.compile(r"[.@][0-9]+$")


class JobError(Exception):
    """A request an agent can fix: the message says what was wrong and what is allowed."""


def _clean(value: str) -> bool:
    return all(c >= " " and c != "\x7f" for c in value)


def check_job_id(value: object, what: str = "job_id") -> str:
    """An id to look up (any job, step or tick id the server handed out)."""
    if not isinstance(value, str) or not value.strip():
        raise JobError(
            f"{what} must be a non-empty string such as 'report-2026-05', got {value!r:.40}"
        )
    if len(value) > 512 or not _clean(value):
        raise JobError(f"{what} {value[:40]!r}… is not an id this server hands out")
    return value


def check_new_id(value: object, what: str = "job_id") -> str:
    """An id an agent chooses for something new: 1–200 printable characters, not ending
    in ``.<digits>`` or ``@<digits>`` (those name steps and cron ticks)."""
    if not isinstance(value, str) or not value.strip():
        raise JobError(
            f"{what} must be a non-empty string such as 'report-2026-05', got {value!r:.40}"
        )
    if len(value) > MAX_ID_LENGTH:
        raise JobError(f"{what} must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    if not _clean(value):
        raise JobError(f"{what} {value!r:.60} contains control characters; use printable text")
    if _RESERVED_ENDING.search(value):
        raise JobError(
            f"{what} {value!r} may not end in '.<digits>' or '@<digits>' (those name steps and "
            "cron runs); for example use 'report-7' instead of 'report.7'"
        )
    return value


def check_job_ids(job_ids: object, most: int) -> list[str]:
    if not isinstance(job_ids, list) or not job_ids:
        raise JobError('job_ids must be a non-empty list of ids, e.g. ["report-2026-05"]')
    if len(job_ids) > most:
        raise JobError(f"at most {most} job ids per call, got {len(job_ids)}; split the list")
    for job_id in job_ids:
        check_job_id(job_id, "each of job_ids")
    return job_ids


def _number(value: Any) -> Any:
    """A bound as a person writes it: 315360000, not 3.1536e+08; 0.5 as 0.5."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


def _words(error: Any) -> str:
    """One validation error in plain words."""
    kind = str(error["type"]).removeprefix("string_")
    ctx = {k: _number(v) for k, v in (error.get("ctx") or {}).items()}
    given = error.get("input")
    unit = "character" if isinstance(given, str) else "item"
    items = f"{unit}(s)"
    plain = {
        "missing": "is required",
        "too_short": f"needs at least {ctx.get('min_length')} {items}",
        "too_long": f"takes at most {ctx.get('max_length')} {items}",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "greater_than": f"must be more than {ctx.get('gt')}",
        "less_than": f"must be less than {ctx.get('lt')}",
        "literal_error": f"must be one of {ctx.get('expected')}",
        "finite_number": "must be a finite number",
    }.get(kind, str(error["msg"]).replace("Input should", "should"))
    if kind == "missing":
        return plain
    counted = kind in ("too_short", "too_long") and isinstance(given, str | list)
    shown = f"{len(given)}" if counted else f"{given!r:.60}"
    return f"{plain} (got {shown})"


def describe_validation(exc: pydantic.ValidationError, what: str) -> str:
    """A pydantic error in plain words: which argument, what is wrong, what was given."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where} {_words(error)}" if where else _words(error))
    return f"{what}: " + "; ".join(problems)


def friendly(exc: BaseException, what: str) -> str:
    """The message of an engine error, without the engine's internals."""
    cause: Any = exc.__cause__
    if isinstance(cause, pydantic.ValidationError):
        # The engine names the argument before a colon: "argument 'n' of squares is invalid: ..."
        prefix = str(exc).split(": ", 1)[0] if ": " in str(exc) else what
        return describe_validation(cause, prefix)
    if isinstance(exc, pydantic.ValidationError):
        return describe_validation(exc, what)
    text = str(exc)
    text = re.sub(r"\s*For further information visit \S+", "", text)
    return text
