"""Historical weather gathering: a durable job over the Open-Meteo archive API.

One checkpointed step per location-month, fanned out with ``asyncio.gather``;
transient HTTP errors (429, 5xx, network) are retried with backoff, anything else
fails the step at once with a clear message. Load it with
``agent-tools serve --jobs examples.weather.jobs``.
"""

from __future__ import annotations

import asyncio
import calendar
import os
from typing import Any

import httpx
from pydantic import BaseModel

from promises import Context, Exponential, NonRetryableError, current_step, durable

ARCHIVE_URL = os.environ.get(
    "OPEN_METEO_ARCHIVE_URL", "https://archive-api.open-meteo.com/v1/archive"
)


class Location(BaseModel):
    name: str
    latitude: float
    longitude: float


class MonthStats(BaseModel):
    location: str
    month: str
    days: int
    mean_max_c: float
    mean_min_c: float
    precipitation_mm: float


class TransientHTTPError(Exception):
    """Worth retrying: rate limited, server error, network trouble."""


class BadResponse(NonRetryableError):
    """The API answered with something we cannot use; retrying will not help."""


def _month_range(month: str) -> tuple[str, str]:
    try:
        year, mon = (int(part) for part in month.split("-"))
        last = calendar.monthrange(year, mon)[1]
    except ValueError as exc:
        raise BadResponse(f"month {month!r} is not YYYY-MM") from exc
    return f"{year:04d}-{mon:02d}-01", f"{year:04d}-{mon:02d}-{last:02d}"


async def fetch_month(location: Location, month: str) -> MonthStats:
    """One step: the daily archive of one location for one month."""
    start, end = _month_range(month)
    params: dict[str, Any] = {
        "latitude": location.latitude,
        "longitude": location.longitude,
        "start_date": start,
        "end_date": end,
        "daily": "temperature_2m_max,temperature_2m_min,precipitation_sum",
        "timezone": "UTC",
    }
    step = current_step()
    headers = {"X-Request-Id": step.id} if step else {}  # the step id: stable across retries
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(ARCHIVE_URL, params=params, headers=headers)
    except httpx.TransportError as exc:
        raise TransientHTTPError(f"network error fetching {location.name} {month}: {exc}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientHTTPError(
            f"Open-Meteo answered {response.status_code} for {location.name} {month}"
        )
    if response.status_code != 200:
        detail = f"{response.status_code} {response.text[:200]}"
        raise BadResponse(f"Open-Meteo refused {location.name} {month}: {detail}")
    try:
        daily = response.json()["daily"]
        highs = [float(v) for v in daily["temperature_2m_max"] if v is not None]
        lows = [float(v) for v in daily["temperature_2m_min"] if v is not None]
        rain = [float(v) for v in daily["precipitation_sum"] if v is not None]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadResponse(
            f"malformed Open-Meteo response for {location.name} {month}: {exc!r}"
        ) from exc
    if not highs or not lows:
        raise BadResponse(f"Open-Meteo returned no days for {location.name} {month}")
    return MonthStats(
        location=location.name,
        month=month,
        days=len(highs),
        mean_max_c=round(sum(highs) / len(highs), 2),
        mean_min_c=round(sum(lows) / len(lows), 2),
        precipitation_mm=round(sum(rain), 1),
    )


# --8<-- [start:gather]
@durable(name="weather.gather", retry=Exponential(initial=2, max_delay=60, max_attempts=6))
async def gather_weather(
    ctx: Context, locations: list[Location], months: list[str]
) -> dict[str, Any]:
    """Gather monthly weather history (Open-Meteo archive) for places and months.

    Args:
        locations: The places, each with a name and its coordinates in decimal degrees.
            Example: [{"name": "Lisbon", "latitude": 38.72, "longitude": -9.14}]
        months: The months to gather, each as "YYYY-MM", in the past. Example:
            ["2025-01", "2025-02", "2025-03"]
    """
    pairs = [(loc, month) for loc in locations for month in months]
    ctx.progress(f"fetching {len(pairs)} location-months", 0.0)
    rows: list[MonthStats] = await asyncio.gather(
        *(ctx.run(fetch_month, loc, m) for loc, m in pairs)
    )
    ctx.progress("summarizing", 0.95)
    summary = {
        loc.name: {
            "mean_max_c": round(
                sum(r.mean_max_c for r in rows if r.location == loc.name) / len(months), 2
            ),
            "precipitation_mm": round(
                sum(r.precipitation_mm for r in rows if r.location == loc.name), 1
            ),
        }
        for loc in locations
    }
    return {"months": [r.model_dump() for r in rows], "summary": summary}


# --8<-- [end:gather]
