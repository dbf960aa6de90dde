"""Durable functions: registering them by a stable name, and checking their arguments.

    @durable(retry=Exponential())
    async def gather(ctx: Context, city: str, months: list[str]) -> dict: ...

A registered function is a ``DurableFunction``; jobs refer to it by ``name``. See
``promises.context`` for what ``ctx`` offers and ``promises.runtime`` for running jobs.

Deadlines: a job has none unless ``timeout=`` is given (as in DBOS and Temporal). A
job's own waits — ``ctx.sleep``, ``ctx.promise``, ``ctx.approval`` — are never cut
short by a default; a job *with* a deadline that asks to wait past it gets
``WaitPastDeadline`` at that wait, not a silent time-out later.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, overload

import pydantic

from promises.codec import adapter
from promises.errors import InvalidArgument, UnknownJob
from promises.retry import Exponential, RetryPolicy

if TYPE_CHECKING:
    from promises.context import Context


@dataclass(frozen=True)
class DurableFunction:
    fn: Callable[..., Awaitable[Any]]
    name: str
    retry: RetryPolicy
    #: The job's deadline after its start, or None (the default): no deadline.
    timeout: timedelta | None
    description: str

    @property
    def signature(self) -> inspect.Signature:
        """The job's arguments as callers pass them (without ``ctx``)."""
        return _signature(self.fn)

    async def __call__(self, ctx: Context, *args: Any, **kwargs: Any) -> Any:
        return await self.fn(ctx, *args, **kwargs)


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Awaitable[Any]]) -> inspect.Signature:
    sig = inspect.signature(fn, eval_str=True)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


REGISTRY: dict[str, DurableFunction] = {}


@overload
def durable(fn: Callable[..., Awaitable[Any]], /) -> DurableFunction: ...


@overload
def durable(
    *, name: str | None = None, retry: RetryPolicy | None = None, timeout: timedelta | None = ...
) -> Callable[[Callable[..., Awaitable[Any]]], DurableFunction]: ...


def durable(
    fn: Callable[..., Awaitable[Any]] | None = None,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: timedelta | None = None,
) -> DurableFunction | Callable[[Callable[..., Awaitable[Any]]], DurableFunction]:
    """Register an ``async def f(ctx, ...)`` as a durable function under a stable name
    (default: ``module:qualname``). Use bare or with arguments. ``timeout``: the job's
    deadline after its start; none by default."""

    def register(f: Callable[..., Awaitable[Any]]) -> DurableFunction:
        if not inspect.iscoroutinefunction(f):
            raise InvalidArgument(f"@durable needs an async function, got {f!r}")
        if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta(0)):
            raise InvalidArgument(
                f"timeout must be a positive timedelta or None (no deadline), got {timeout!r}"
            )
        wrapped = DurableFunction(
            fn=f,
            name=name or f"{f.__module__}:{f.__qualname__}",
            retry=retry or Exponential(),
            timeout=timeout,
            description=inspect.cleandoc(f.__doc__ or ""),
        )
        existing = REGISTRY.get(wrapped.name)
        same_source = existing is not None and (
            existing.fn.__module__,
            existing.fn.__qualname__,
        ) == (f.__module__, f.__qualname__)
        if existing is not None and not same_source:
            raise InvalidArgument(
                f"durable function name {wrapped.name!r} is already taken by "
                f"{existing.fn.__module__}.{existing.fn.__qualname__}; "
                "pass name=... to choose another"
            )
        REGISTRY[wrapped.name] = wrapped
        return wrapped

    return register(fn) if fn is not None else register


def lookup(name: str, registry: Mapping[str, DurableFunction] | None = None) -> DurableFunction:
    functions = REGISTRY if registry is None else registry
    found = functions.get(name)
    if found is None:
        available = ", ".join(sorted(functions)) or "none are registered"
        raise UnknownJob(f"no durable function is named {name!r}; available: {available}")
    return found


@functools.lru_cache(maxsize=1024)
def step_name(fn: object) -> str:
    if isinstance(fn, DurableFunction):
        return fn.name
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}:{getattr(fn, '__qualname__', repr(fn))}"


@functools.lru_cache(maxsize=1024)
def return_annotation(fn: object) -> Any:
    target = fn.fn if isinstance(fn, DurableFunction) else fn
    try:
        return inspect.signature(target, eval_str=True).return_annotation  # type: ignore[arg-type]
    except (TypeError, ValueError, NameError):
        return inspect.Parameter.empty


#: Annotations a value of exactly that type meets as it is (pydantic would return it).
_SCALARS: frozenset[type] = frozenset({int, float, str, bool})


def validated_arguments(
    function: DurableFunction, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Bind arguments to the function's signature and validate each against its
    annotation (so a ``list[Location]`` parameter receives ``Location`` models)."""
    signature = function.signature
    names = _positional_names(function.fn)
    if not kwargs and names is not None and len(args) == len(names):
        arguments = dict(zip(names, args, strict=True))  # what bind would find, quicker
        _validate(function, signature, arguments)
        return list(arguments.values()), {}
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        takes = ", ".join(
            p.name if p.default is inspect.Parameter.empty else f"{p.name} (optional)"
            for p in signature.parameters.values()
        )
        raise InvalidArgument(
            f"arguments do not fit {function.name}: {exc}; it takes {takes or 'no arguments'}"
        ) from exc
    _validate(function, signature, bound.arguments)
    return list(bound.args), dict(bound.kwargs)


@functools.lru_cache(maxsize=1024)
def _positional_names(fn: Callable[..., Awaitable[Any]]) -> tuple[str, ...] | None:
    """The parameters' names when each may be passed by position (no ``*args``,
    ``**kwargs`` or keyword-only ones); else None."""
    parameters = _signature(fn).parameters.values()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if all(p.kind in positional for p in parameters):
        return tuple(p.name for p in parameters)
    return None


def _validate(
    function: DurableFunction, signature: inspect.Signature, arguments: dict[str, Any]
) -> None:
    """Validate (and convert, in place) each argument against its annotation."""
    for name, value in arguments.items():
        annotation = signature.parameters[name].annotation
        if annotation in (inspect.Parameter.empty, Any) or (
            type(value) is annotation and annotation in _SCALARS  # (not every one hashes)
        ):
            continue  # nothing to check or convert
        try:
            arguments[name] = adapter(annotation).validate_python(value)
        except pydantic.ValidationError as exc:
            raise InvalidArgument(
                f"argument {name!r} of {function.name} is invalid: {exc}"
            ) from exc
        except TypeError:
            continue  # an annotation pydantic cannot validate: pass the value as given
