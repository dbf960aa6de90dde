"""JSON for what jobs take and return, and for the errors they fail with.

Arguments and results are JSON: dicts, lists, strings, numbers, booleans, None, and
pydantic models (stored as their JSON). Reading a value back validates it against the
annotation it is read for, so a step annotated ``-> Report`` returns a ``Report`` on
replay too. Anything else fails with ``NotSerializable``, which is never retried.
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass
from typing import Any

import pydantic
import pydantic_core

from promises.errors import NotSerializable


def to_json(value: object, what: str) -> str:
    try:
        return json.dumps(
            pydantic_core.to_jsonable_python(value), allow_nan=False, separators=(",", ":")
        )
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise NotSerializable(
            f"{what} is not JSON ({exc}); use dicts, lists, str, int, float, bool, None "
            "or pydantic models"
        ) from exc


@functools.lru_cache(maxsize=512)
def adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation)


def from_json(data: str | None, annotation: Any = inspect.Parameter.empty) -> Any:
    value = None if data is None else json.loads(data)
    if annotation in (inspect.Parameter.empty, Any, None, type(None)) or isinstance(
        annotation, str
    ):
        return value
    try:
        return adapter(annotation).validate_python(value)
    except TypeError:  # an annotation pydantic cannot build a validator for: keep the JSON
        return value


@dataclass(frozen=True)
class ErrorInfo:
    """A failure as it is stored: survives any process and round trips through JSON."""

    type: str
    message: str
    retryable: bool = False

    @classmethod
    def of(cls, exc: BaseException, *, retryable: bool = False) -> ErrorInfo:
        if isinstance(exc, StoredError):
            return exc.info
        return cls(type(exc).__qualname__, str(exc) or type(exc).__qualname__, retryable)

    def to_json(self) -> str:
        return json.dumps(
            {"type": self.type, "message": self.message, "retryable": self.retryable},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, data: str | None) -> ErrorInfo:
        try:
            raw = json.loads(data or "")
            return cls(str(raw["type"]), str(raw["message"]), bool(raw.get("retryable", False)))
        except (ValueError, KeyError, TypeError):
            return cls("Error", data or "rejected without a reason")


class StoredError(Exception):
    """A failure read back from the store (a step or job that failed earlier)."""

    def __init__(self, info: ErrorInfo) -> None:
        self.info = info
        super().__init__(f"{info.type}: {info.message}")

    @property
    def type(self) -> str:
        return self.info.type

    @property
    def message(self) -> str:
        return self.info.message
