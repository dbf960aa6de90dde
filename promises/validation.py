"""Checks on everything a caller hands the store. Each failure says what is allowed.

Both backends must answer alike, so text is checked here, before any database sees
it: no unpaired surrogates (not UTF-8; SQLite's driver would raise a raw
``UnicodeEncodeError``) and no NUL characters (PostgreSQL cannot keep them in text).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from promises.errors import InvalidArgument
from promises.records import (
    APPROVAL_TAG,
    JOB_TAG,
    MAX_TIMESTAMP,
    SEARCH_STATES,
    STEP_TAG,
    TIMER_TAG,
    SearchState,
    Value,
)

MAX_ID_LENGTH = 512
#: Ids a caller chooses (jobs, timers, schedules) leave room for the ids derived from
#: them: steps (``id.0.3``), cron ticks (``id@1767225600000``), settle keys.
MAX_JOB_ID_LENGTH = 200
MAX_KEY_LENGTH = 512
MAX_TAGS = 64
MAX_TAG_KEY_LENGTH = 256
MAX_TAG_VALUE_LENGTH = 1024
MAX_SEARCH_LIMIT = 1000
RESERVED_TAG_PREFIX = "promises:"
#: Derived ids end like this; a chosen id may not, so the two can never collide.
_DERIVED_SUFFIX = re.compile(r"[.@][0-9]+$")
_MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    #: The most bytes a param or value may hold (data plus headers, UTF-8).
    max_payload_bytes: int = 1024 * 1024


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _is_clean_text(s: str) -> bool:
    """No control characters (one regex scan, not a Python loop per character)."""
    return _CONTROL.search(s) is None


def check_text(s: str, what: str) -> str:
    """Refuse text a database cannot store faithfully on both backends."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"{what} contains an unpaired surrogate ({s[exc.start]!r}), which is not valid "
            "Unicode text; send valid UTF-8"
        ) from None
    if "\x00" in s:
        raise InvalidArgument(
            f"{what} contains a NUL character (\\0), which the store cannot keep; "
            "remove it or escape it (JSON writes it as \\u0000)"
        )
    return s


def check_id(promise_id: object, what: str = "promise id") -> str:
    if not isinstance(promise_id, str):
        raise InvalidArgument(f"{what} must be a string, got {type(promise_id).__name__}")
    if not 1 <= len(promise_id) <= MAX_ID_LENGTH:
        raise InvalidArgument(
            f"{what} must be 1 to {MAX_ID_LENGTH} characters, got {len(promise_id)}"
        )
    if not _is_clean_text(promise_id):
        raise InvalidArgument(
            f"{what} {promise_id!r} contains control characters; use printable text"
        )
    return check_text(promise_id, what)


def check_job_id(job_id: object, what: str = "job id") -> str:
    """An id a caller chooses for a job, timer or schedule."""
    if isinstance(job_id, str) and not job_id:
        raise InvalidArgument(f"{what} must not be empty; leave it out to get a generated one")
    job_id = check_id(job_id, what)
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise InvalidArgument(
            f"{what} is {len(job_id)} characters; the maximum is {MAX_JOB_ID_LENGTH} "
            "(longer ids leave no room for the ids of its steps)"
        )
    if _DERIVED_SUFFIX.search(job_id):
        raise InvalidArgument(
            f"{what} {job_id!r} ends like the id of a job's step or of a scheduled run "
            "('.<number>' or '@<number>'); choose an id that does not, e.g. "
            f"{job_id.replace('.', '-').replace('@', '-')!r}"
        )
    return job_id


def check_ikey(ikey: object) -> str | None:
    if ikey is None:
        return None
    if not isinstance(ikey, str) or not 1 <= len(ikey) <= MAX_KEY_LENGTH:
        raise InvalidArgument(
            f"an idempotency key must be None or a string of 1 to {MAX_KEY_LENGTH} characters, "
            f"got {ikey!r:.80}"
        )
    return check_text(ikey, "the idempotency key")


def check_strict(strict: object) -> bool:
    if not isinstance(strict, bool):
        raise InvalidArgument(f"strict must be True or False, got {strict!r:.40}")
    return strict


def check_timestamp(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(
            f"{what} must be an integer count of milliseconds since the epoch, got {value!r:.40}"
        )
    if not 0 <= value <= MAX_TIMESTAMP:
        raise InvalidArgument(
            f"{what}={value} is out of range; use milliseconds since the epoch "
            f"between 0 and {MAX_TIMESTAMP} (year 9999)"
        )
    return value


def check_seconds(value: object, what: str) -> float:
    """A finite, non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{what} must be a number of seconds, got {value!r:.40}")
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def check_value(value: object, what: str, limits: Limits) -> Value:
    if value is None:
        return Value()
    if not isinstance(value, Value):
        raise InvalidArgument(
            f"{what} must be a promises.Value or None, got {type(value).__name__}"
        )
    if value.data is not None:
        if not isinstance(value.data, str):
            raise InvalidArgument(
                f"{what}.data must be text (str) or None, got {type(value.data).__name__}"
            )
        check_text(value.data, f"{what}.data")
    headers = _check_str_mapping(value.headers, f"{what}.headers")
    size = len((value.data or "").encode()) + sum(
        len(k.encode()) + len(v.encode()) for k, v in headers.items()
    )
    if size > limits.max_payload_bytes:
        raise InvalidArgument(
            f"{what} is {size} bytes; the limit is {limits.max_payload_bytes} bytes. "
            "Store large data elsewhere and pass a reference"
        )
    return Value(value.data, headers)


def _check_str_mapping(m: object, what: str) -> Mapping[str, str]:
    if not isinstance(m, Mapping):
        raise InvalidArgument(f"{what} must be a mapping of str to str, got {type(m).__name__}")
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgument(f"{what} must map str to str; {k!r:.40}: {v!r:.40} is not")
        check_text(k, f"a key of {what}")
        check_text(v, f"{what}[{k!r:.40}]")
    return MappingProxyType(dict(m))


_RESERVED_SETTABLE = {(TIMER_TAG, "true"), (APPROVAL_TAG, "true")}


def check_tags(tags: object, *, creating: bool) -> Mapping[str, str]:
    if tags is None:
        return MappingProxyType({})
    checked = _check_str_mapping(tags, "tags")
    if len(checked) > MAX_TAGS:
        raise InvalidArgument(f"a promise has at most {MAX_TAGS} tags, got {len(checked)}")
    for k, v in checked.items():
        # In UTF-8 bytes, so one limit holds on both backends (a PostgreSQL index entry
        # holds at most 2704 bytes; 1024 four-byte characters would not fit).
        key_bytes, value_bytes = len(k.encode()), len(v.encode())
        if not k or key_bytes > MAX_TAG_KEY_LENGTH or value_bytes > MAX_TAG_VALUE_LENGTH:
            raise InvalidArgument(
                f"tag {k!r:.60} is too long: keys are 1 to {MAX_TAG_KEY_LENGTH} bytes (UTF-8), "
                f"values at most {MAX_TAG_VALUE_LENGTH} bytes"
            )
        reserved_ok = (k, v) in _RESERVED_SETTABLE or k in (JOB_TAG, STEP_TAG)
        if creating and k.startswith(RESERVED_TAG_PREFIX) and not reserved_ok:
            raise InvalidArgument(
                f"tag {k!r} uses the reserved prefix {RESERVED_TAG_PREFIX!r}; "
                f"the only reserved tag a caller may set is {TIMER_TAG!r}: 'true'"
            )
    return checked


def check_search(
    pattern: object, state: object, limit: object
) -> tuple[str, SearchState | None, int]:
    check_id(pattern, "search id pattern")
    if state is not None and state not in SEARCH_STATES:
        raise InvalidArgument(
            f"state must be one of {', '.join(SEARCH_STATES)} or None, got {state!r:.40}"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise InvalidArgument(
            f"limit must be an integer from 1 to {MAX_SEARCH_LIMIT}, got {limit!r:.40}"
        )
    return pattern, state, limit  # type: ignore[return-value]


def check_seq(seq: object) -> int:
    """A position taken from a cursor: an integer the databases can hold."""
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _MAX_SEQ:
        raise TypeError("not a position")
    return seq


def dumps_mapping(m: Mapping[str, str]) -> str | None:
    return json.dumps(dict(m), separators=(",", ":"), sort_keys=True) if m else None


_NO_ENTRIES: Mapping[str, str] = MappingProxyType({})


@functools.lru_cache(maxsize=4096)
def loads_mapping(s: str | None) -> Mapping[str, str]:
    # Cached: tag sets repeat across many promises, and the result is read-only.
    if not s:
        return _NO_ENTRIES
    loaded: Any = json.loads(s)
    return MappingProxyType(loaded)
