"""Bad input never escapes as a raw error, and both backends answer alike (issue 9,
item 9), and ids cannot collide or overflow (item 7). Every test runs on SQLite and
PostgreSQL; every refusal is an ``InvalidArgument`` that names the problem, never "safe
to retry" (that is for what is transient), and leaves acknowledged data as it was."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest

from promises import (
    MAX_JOB_ID_LENGTH,
    InvalidArgument,
    JobConflict,
    PromiseError,
    Runtime,
    SqlStore,
    StoreUnavailable,
    Value,
)
from tests import durable_jobs as jobs
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio
HOUR = 3_600_000
SURROGATE = "\ud800"


def refused(call: Any, *match: str) -> str:
    with pytest.raises(InvalidArgument) as caught:
        call()
    message = str(caught.value)
    assert "safe to retry" not in message
    for part in match:
        assert part in message, message
    return message


@pytest.fixture
def kept(store: SqlStore, clock: FakeClock) -> SqlStore:
    store.create("kept", timeout_at=clock() + HOUR, ikey="k", tags={"t": "v"})
    return store


def still_intact(store: SqlStore) -> None:
    p = store.get("kept")
    assert p.pending and p.ikey_create == "k" and dict(p.tags) == {"t": "v"}


def test_an_unpaired_surrogate_anywhere_is_invalid_input(kept: SqlStore, clock: FakeClock) -> None:
    later = clock() + HOUR
    calls = [
        lambda: kept.create(f"id{SURROGATE}", timeout_at=later),
        lambda: kept.create("a", timeout_at=later, ikey=f"k{SURROGATE}"),
        lambda: kept.create("a", timeout_at=later, param=Value(f"x{SURROGATE}")),
        lambda: kept.create("a", timeout_at=later, param=Value("x", {"h": SURROGATE})),
        lambda: kept.create("a", timeout_at=later, param=Value("x", {SURROGATE: "v"})),
        lambda: kept.create("a", timeout_at=later, tags={"k": SURROGATE}),
        lambda: kept.create("a", timeout_at=later, tags={SURROGATE: "v"}),
        lambda: kept.resolve("kept", value=Value(SURROGATE)),
        lambda: kept.get(SURROGATE),
        lambda: kept.search(f"kept{SURROGATE}*"),
        lambda: kept.search(tags={"t": SURROGATE}),
    ]
    for call in calls:
        refused(call, "unpaired surrogate", "valid")
    still_intact(kept)


async def test_waiting_on_an_id_with_a_surrogate_is_invalid_input(kept: SqlStore) -> None:
    with pytest.raises(InvalidArgument, match="unpaired surrogate"):
        await kept.wait(f"kept{SURROGATE}", timeout=1)


def test_nul_in_data_or_a_tag_is_refused_alike_on_both_backends(
    kept: SqlStore, clock: FakeClock
) -> None:
    later = clock() + HOUR
    for call in (
        lambda: kept.create("a", timeout_at=later, param=Value("a\x00b")),
        lambda: kept.create("a", timeout_at=later, tags={"k": "a\x00b"}),
        lambda: kept.resolve("kept", value=Value("a\x00b")),
        lambda: kept.resolve("kept", value=Value("x", {"h": "a\x00b"})),
    ):
        refused(call, "NUL character", "JSON writes it as \\u0000")
    still_intact(kept)


@pytest.mark.parametrize("seq", [2**63, 10**30, -1, 1.5, "12", None, True])
def test_an_edited_search_cursor_is_invalid_input_on_both_backends(
    kept: SqlStore, seq: object
) -> None:
    from promises.cursors import query_digest

    forged = json.dumps({"s": seq, "q": query_digest("*", None, {})}).encode()
    cursor = base64.urlsafe_b64encode(forged).decode()
    refused(lambda: kept.search(limit=1, cursor=cursor), "cursor is not one this store")


def test_a_cursor_that_fits_is_accepted(kept: SqlStore) -> None:
    from promises.cursors import encode_cursor, query_digest

    page = kept.search(limit=1, cursor=encode_cursor(2**63 - 1, query_digest("*", None, {})))
    assert [p.id for p in page.promises] == ["kept"]


async def test_a_wait_for_nan_or_infinite_or_negative_seconds_is_refused(kept: SqlStore) -> None:
    for timeout in (math.nan, math.inf, -1, "5", None):
        with pytest.raises(InvalidArgument, match="timeout must be a"):
            await kept.wait("kept", timeout=timeout)  # type: ignore[arg-type]


def test_collect_with_a_number_instead_of_a_timedelta_is_refused(kept: SqlStore) -> None:
    refused(lambda: kept.collect(5), "max_age must be a timedelta")  # type: ignore[arg-type]


def test_a_broken_rule_is_not_called_safe_to_retry(kept: SqlStore) -> None:
    from tests.conftest import raw

    kept.resolve("kept")
    with pytest.raises(PromiseError) as caught:
        raw(kept, "UPDATE promises SET value_data = 'x' WHERE id = 'kept'")
    assert not isinstance(caught.value, StoreUnavailable)
    assert "safe to retry" not in str(caught.value)


def test_a_tag_too_long_in_bytes_is_refused_alike_on_both_backends(
    kept: SqlStore, clock: FakeClock
) -> None:
    # 1024 four-byte characters: within a limit counted in characters, but too big for a
    # PostgreSQL index entry, which refused it as "safe to retry". Counted in bytes, both
    # backends refuse it at once; 1024 one-byte characters still fit.
    later = clock() + HOUR
    refused(lambda: kept.create("a", timeout_at=later, tags={"k": "😀" * 1024}), "1024 bytes")
    refused(lambda: kept.create("a", timeout_at=later, tags={"é" * 200: "v"}), "256 bytes")
    assert kept.create("b", timeout_at=later, tags={"k": "x" * 1024}).fresh
    assert kept.create("c", timeout_at=later, tags={"k": "😀" * 256}).fresh
    still_intact(kept)


def test_what_the_database_refuses_is_classed_by_what_helps() -> None:
    # A value too large or malformed fails again however often it is retried; a refused
    # login needs the URL fixed; a lost connection passes.
    import psycopg.errors as pg

    from promises import StoreMisconfigured
    from promises.backends import translate

    for value_error in (pg.ProgramLimitExceeded("index row size 4120 exceeds btree maximum"),
                        pg.NumericValueOutOfRange("bigint out of range")):  # fmt: skip
        error = translate(value_error)
        assert isinstance(error, InvalidArgument) and "safe to retry" not in str(error)
    login = translate(pg.InvalidPassword("password authentication failed for user x"))
    assert isinstance(login, StoreMisconfigured) and "check the database URL" in str(login)
    gone = translate(pg.OperationalError('FATAL:  database "nope" does not exist'))
    assert isinstance(gone, StoreMisconfigured)
    starting = translate(pg.OperationalError("FATAL:  the database system is starting up"))
    assert type(starting) is StoreUnavailable and "safe to retry" in str(starting)
    assert type(translate(pg.AdminShutdown("terminating connection"))) is StoreUnavailable


# -- ids (item 7) -------------------------------------------------------------------------


def test_a_job_id_shaped_like_a_step_or_a_tick_is_refused(store: SqlStore) -> None:
    runtime = Runtime(store)
    for bad in ("report.0", "report.12", "a.b.3", "nightly@1767225600000"):
        refused(lambda b=bad: runtime.start(jobs.squares, 1, id=b), "ends like the id of a")
    for bad in ("x.1", "t@5"):
        refused(lambda b=bad: runtime.timer(b, store.clock() + 1000), "ends like the id of a")
    # Ids that merely contain dots or at signs are fine.
    assert runtime.start(jobs.squares, 1, id="report.v2-2026.final").fresh
    assert runtime.start(jobs.squares, 1, id="me@example.com").fresh


def test_a_job_id_is_limited_so_its_derived_ids_fit(store: SqlStore) -> None:
    runtime = Runtime(store)
    refused(
        lambda: runtime.start(jobs.squares, 1, id="j" * (MAX_JOB_ID_LENGTH + 1)),
        f"the maximum is {MAX_JOB_ID_LENGTH}",
    )
    refused(lambda: runtime.start(jobs.squares, 1, id=""), "must not be empty")


async def test_a_job_with_the_longest_id_runs_to_its_end(store: SqlStore) -> None:
    import asyncio

    from promises import Worker

    longest = "j" * MAX_JOB_ID_LENGTH
    runtime = Runtime(store)
    worker = Worker(runtime, poll_interval=0.05)
    running = asyncio.create_task(worker.run())
    try:
        runtime.start(jobs.shape, id=longest)  # nested steps: longest.2.1
        done = await store.wait(longest, timeout=30)
    finally:
        worker.stop()
        await running
    assert Runtime.result(done) == {"first": 1, "pair": [4, 9], "nested": 16 + 25}


def test_reusing_a_fired_or_cancelled_timer_id_says_so(store: SqlStore, clock: FakeClock) -> None:
    runtime = Runtime(store)
    at = clock() + 1000
    assert runtime.timer("t", at).fresh
    assert not runtime.timer("t", at).fresh  # the same timer again: fine while it waits
    store.cancel("t")
    with pytest.raises(JobConflict, match="is cancelled"):
        runtime.timer("t", at)
    runtime.timer("u", at)
    clock.advance(1000)
    with pytest.raises(JobConflict, match="already fired"):
        runtime.timer("u", at)
