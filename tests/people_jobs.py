"""Job kinds for the page and CLI tests: a report with progress and a long result, a
refund that asks a person, a job that fails, and one that waits for a test's signal."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from promises import Context, Never, NonRetryableError, durable


def fetch_month(city: str, month: str) -> dict[str, Any]:
    return {"city": city, "month": month, "days": 30, "mean_max_c": 18.5}


@durable(name="people.report", retry=Never())
async def report(ctx: Context, city: str, months: list[str]) -> dict[str, Any]:
    """Monthly figures for a city: one step per month, and a long result."""
    rows = []
    for i, month in enumerate(months):
        ctx.progress(f"fetching {month}", i / len(months))
        rows.append(await ctx.run(fetch_month, city, month))
    return {"city": city, "months": rows, "notes": ["a long line of notes " * 8] * 30}


@durable(name="people.refund", retry=Never())
async def refund(
    ctx: Context, order_id: str, amount_eur: float, hours: float = 47.2
) -> dict[str, Any]:
    """A refund a person approves."""
    asked = ctx.approval(
        f"Refund {amount_eur:.2f} EUR for order {order_id}?",
        details={
            "order_id": order_id, "amount_eur": amount_eur,
            "customer": "Ana Lima <ana@example.com>",
            "reason": "The parcel never arrived; the carrier confirmed it was lost in transit "
                      "between the depot and the customer's address.",
            "history": [{"order": f"A-{i}", "total_eur": 10 * i} for i in range(12)],
        },
        timeout=timedelta(hours=hours),
    )  # fmt: skip
    decision = await asked
    return {"refunded": decision.approved, "comment": decision.comment}


class Broken(NonRetryableError):
    pass


def explode(reason: str) -> None:
    raise Broken(f"the upstream said no: {reason}")


@durable(name="people.fails", retry=Never())
async def fails(ctx: Context, reason: str) -> None:
    """Fails in its first step."""
    await ctx.run(explode, reason)


@durable(name="people.nap", retry=Never())
async def nap(ctx: Context, seconds: float) -> str:
    """Sleeps durably, then says so."""
    await ctx.sleep(seconds)
    return "rested"


@durable(name="people.busy", retry=Never())
async def busy(ctx: Context, seconds: float) -> str:
    """Runs one long step, reporting progress."""
    ctx.progress("working on it", 0.4)
    await ctx.run(asyncio.sleep, seconds)
    return "done"
