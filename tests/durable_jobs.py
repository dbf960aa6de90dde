"""Durable functions the runtime tests use, in-process and in worker subprocesses.

Every step execution appends a JSON line to ``$DURABLE_TEST_LOG`` (if set) with the
step id, the process id and wall-clock start/end in ms, so tests can count how often
each step really ran and by whom.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from promises import Context, current_step, durable
from promises.retry import Constant, Never, NonRetryableError

FAST = Constant(every=0.01, max_attempts=3)


def _log(kind: str, started: float, **extra: Any) -> None:
    path = os.environ.get("DURABLE_TEST_LOG")
    if not path:
        return
    step = current_step()
    line = json.dumps({
        "kind": kind, "step": step.id if step else None, "attempt": step.attempt if step else None,
        "pid": os.getpid(), "start": int(started * 1000), "end": int(time.time() * 1000), **extra,
    })  # fmt: skip
    with open(path, "a") as f:  # one write per line, appended atomically
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def square(i: int, pause: float = 0.0) -> int:
    started = time.time()
    time.sleep(pause)
    _log("square", started, i=i)
    return i * i


async def async_square(i: int) -> int:
    started = time.time()
    _log("async_square", started, i=i)
    return i * i


def wall_ms() -> int:
    return int(time.time() * 1000)


@durable(name="tests.squares", retry=FAST)
async def squares(ctx: Context, n: int, pause: float = 0.0) -> list[int]:
    return [await ctx.run(square, i, pause) for i in range(n)]


@durable(name="tests.sleeper", retry=FAST)
async def sleeper(ctx: Context, seconds: float) -> dict[str, int]:
    before = await ctx.run(wall_ms)
    await ctx.sleep(seconds)
    after = await ctx.run(wall_ms)
    return {"before": before, "after": after}


@durable(name="tests.sleep_until", retry=FAST)
async def sleep_until(ctx: Context, when: str) -> int:
    await ctx.sleep_until(datetime.fromisoformat(when))
    return int(await ctx.run(wall_ms))


@durable(name="tests.inner", retry=FAST)
async def inner(ctx: Context, x: int) -> int:
    return int(await ctx.run(square, x)) + int(await ctx.run(square, x + 1))


@durable(name="tests.shape", retry=FAST)
async def shape(ctx: Context) -> dict[str, Any]:
    """Sequential, concurrent and nested steps, for their ids."""
    import asyncio

    first = await ctx.run(square, 1)
    pair = await asyncio.gather(ctx.run(square, 2), ctx.run(async_square, 3))
    nested = await ctx.run(inner, 4)
    return {"first": first, "pair": pair, "nested": nested}


class Report(BaseModel):
    city: str
    rows: int


def make_report(city: str) -> Report:
    return Report(city=city, rows=3)


@durable(name="tests.report", retry=FAST)
async def report(ctx: Context, city: str) -> dict[str, Any]:
    r = await ctx.run(make_report, city)
    return {"is_model": isinstance(r, Report), "report": r}


@durable(name="tests.approval", retry=FAST)
async def approval(ctx: Context, amount: int, deadline_s: float = 60) -> dict[str, Any]:
    decision = ctx.promise(timeout=deadline_s, data={"amount": amount})
    await ctx.run(square, amount)  # e.g. send the link; the id is known before the wait
    try:
        answer = await decision
    except Exception as exc:
        return {"id": decision.id, "decided": False, "error": str(exc)}
    return {"id": decision.id, "decided": True, "answer": answer}


class Flaky:
    """Fails ``failures`` times (counted in this process), then returns ``ok``."""

    calls = 0


def flaky(failures: int, error: str = "ConnectionError") -> str:
    started = time.time()
    Flaky.calls += 1
    _log("flaky", started)
    if Flaky.calls <= failures:
        errors = {
            "ConnectionError": ConnectionError,
            "Permanent": PermanentError,
            "KeyError": KeyError,
        }
        raise errors[error](f"failure {Flaky.calls}")
    return "ok"


class PermanentError(NonRetryableError):
    pass


@durable(name="tests.flaky", retry=Constant(every=10.0, max_attempts=4, non_retryable=(KeyError,)))
async def flaky_job(ctx: Context, failures: int, error: str = "ConnectionError") -> str:
    return str(await ctx.run(flaky, failures, error))


@durable(name="tests.flaky_caught", retry=Never())
async def flaky_caught(ctx: Context) -> str:
    try:
        await ctx.run(flaky, 1)
    except ConnectionError as exc:
        return f"caught: {exc}"
    return "no error"


def not_json() -> object:
    return object()


@durable(name="tests.bad_result", retry=FAST)
async def bad_result(ctx: Context) -> Any:
    return object()


@durable(name="tests.bad_step_result", retry=FAST)
async def bad_step_result(ctx: Context) -> Any:
    return await ctx.run(not_json)


@durable(name="tests.big_result", retry=FAST)
async def big_result(ctx: Context, size: int) -> str:
    return "x" * size


@durable(name="tests.fails", retry=FAST)
async def fails(ctx: Context, message: str) -> None:
    raise ValueError(message)


@durable(name="tests.long_steps", retry=FAST)
async def long_steps(ctx: Context, n: int, pause: float) -> int:
    total = 0
    for i in range(n):
        total += int(await ctx.run(square, i, pause))
    return total


@durable(name="tests.timeboxed", retry=FAST, timeout=__import__("datetime").timedelta(seconds=1))
async def timeboxed(ctx: Context) -> str:
    """Asks to sleep past its own deadline: refused at the sleep."""
    await ctx.sleep(30)
    return "woke"


@durable(
    name="tests.timeboxed_work", retry=FAST, timeout=__import__("datetime").timedelta(seconds=1)
)
async def timeboxed_work(ctx: Context, n: int, pause: float) -> int:
    """Works (step after step) longer than its deadline allows."""
    total = 0
    for i in range(n):
        total += int(await ctx.run(square, i, pause))
    return total


# A job whose code "changes" between runs: the step it calls first depends on an
# environment variable, as if the code had been edited between a crash and a restart.
def step_a() -> str:
    return "a"


def step_b() -> str:
    return "b"


@durable(name="tests.changing", retry=FAST)
async def changing(ctx: Context) -> str:
    first = await ctx.run(step_b if os.environ.get("CHANGED") == "1" else step_a)
    await ctx.sleep(float(os.environ.get("CHANGING_SLEEP", "0.2")))
    return str(first)


@durable(name="tests.progress_then_sleep", retry=FAST)
async def progress_then_sleep(ctx: Context, seconds: float) -> str:
    ctx.progress("fetched 3 of 12 months", 0.25)
    await ctx.sleep(seconds)
    return "done"
