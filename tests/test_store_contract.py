"""The store's contract beyond the transition table, on every backend: timeouts and
timers, the sweep, search and its cursors, retention, waiting, invariants."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from promises import (
    TIMER_TAG,
    InvalidArgument,
    InvariantViolation,
    PromiseAlreadySettled,
    PromiseNotFound,
    SqlStore,
    StoreUnavailable,
    Value,
    open_store,
)
from tests.conftest import FakeClock, raw
from tests.waiting import eventually

HOUR = 3_600_000
pytestmark = pytest.mark.anyio  # async tests run on asyncio (see conftest.anyio_backend)


def test_a_created_promise_is_pending_with_its_param_and_tags(
    store: SqlStore, clock: FakeClock
) -> None:
    t = store.create(
        "p1", timeout_at=clock() + HOUR, param=Value('{"a": 1}', {"h": "v"}), tags={"kind": "x"}
    )
    assert t.fresh
    p = store.get("p1")
    assert p == t.promise
    assert (p.state, p.param.data, dict(p.param.headers), dict(p.tags)) == (
        "pending",
        '{"a": 1}',
        {"h": "v"},
        {"kind": "x"},
    )
    assert p.created_at == clock() and p.settled_at is None


def test_a_settled_value_round_trips(store: SqlStore, clock: FakeClock) -> None:
    store.create("p1", timeout_at=clock() + HOUR)
    clock.advance(5)
    t = store.reject("p1", value=Value('{"error": "boom"}', {"type": "ValueError"}))
    p = store.get("p1")
    assert p == t.promise
    assert p.state == "rejected" and p.value.data == '{"error": "boom"}'
    assert dict(p.value.headers) == {"type": "ValueError"} and p.settled_at == clock()


def test_a_pending_promise_times_out_lazily_at_its_timeout(
    store: SqlStore, clock: FakeClock
) -> None:
    store.create("p1", timeout_at=clock() + 1000)
    clock.advance(999)
    assert store.get("p1").state == "pending"
    clock.advance(1)
    p = store.get("p1")
    assert p.state == "rejected_timedout" and p.settled_at == p.timeout_at


def test_a_timer_resolves_at_its_timeout_instead_of_timing_out(
    store: SqlStore, clock: FakeClock
) -> None:
    store.create("sleep", timeout_at=clock() + 1000, tags={TIMER_TAG: "true"})
    clock.advance(1000)
    p = store.get("sleep")
    assert p.state == "resolved" and p.settled_at == p.timeout_at
    with pytest.raises(PromiseAlreadySettled):
        store.resolve("sleep", ikey="late")


def test_a_settle_after_the_timeout_persists_the_timeout(store: SqlStore, clock: FakeClock) -> None:
    store.create("p1", timeout_at=clock() + 10)
    clock.advance(50)
    t = store.resolve("p1", value=Value("too late"))
    assert t.deduplicated and t.promise.state == "rejected_timedout"
    assert store.search(state="rejected").promises[0].id == "p1"


def test_sweep_settles_every_expired_promise_in_bulk(store: SqlStore, clock: FakeClock) -> None:
    for i in range(1200):
        store.create(f"p{i}", timeout_at=clock() + (10 if i % 2 else HOUR))
    store.create("timer", timeout_at=clock() + 10, tags={TIMER_TAG: "true"})
    clock.advance(11)
    assert store.sweep() == 601
    assert store.sweep() == 0
    assert store.get("timer").state == "resolved"
    counts = dict(raw(store, "SELECT state, count(*) FROM promises GROUP BY state"))
    assert counts == {"pending": 600, "rejected_timedout": 600, "resolved": 1}


def test_search_pages_through_everything_newest_first_with_a_stable_order(
    store: SqlStore, clock: FakeClock
) -> None:
    for i in range(25):
        store.create(f"job-{i:02d}", timeout_at=clock() + HOUR)
    seen, cursor = [], None
    while True:
        page = store.search("job-*", limit=10, cursor=cursor)
        seen += [p.id for p in page.promises]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == [f"job-{i:02d}" for i in reversed(range(25))]


def test_search_filters_by_state_tags_and_id_glob(store: SqlStore, clock: FakeClock) -> None:
    store.create("a.1", timeout_at=clock() + HOUR, tags={"kind": "weather", "owner": "ana"})
    store.create("a.2", timeout_at=clock() + HOUR, tags={"kind": "weather", "owner": "bo"})
    store.create("b.1", timeout_at=clock() + HOUR, tags={"kind": "refund"})
    store.create("a_3", timeout_at=clock() + 10, tags={"kind": "weather"})
    store.resolve("a.2")
    store.cancel("b.1")
    clock.advance(20)  # a_3 times out

    def ids(**kw: object) -> list[str]:
        return [p.id for p in store.search(**kw).promises]  # type: ignore[arg-type]

    assert ids(state="pending") == ["a.1"]
    assert ids(state="resolved") == ["a.2"]
    assert ids(state="rejected") == ["a_3", "b.1"]  # canceled and timed out are rejected kinds
    assert ids(tags={"kind": "weather"}) == ["a_3", "a.2", "a.1"]
    assert ids(tags={"kind": "weather", "owner": "ana"}) == ["a.1"]
    assert ids(tags={"owner": "*"}) == ["a.2", "a.1"]  # any value of the tag
    assert ids(id="a.*") == ["a.2", "a.1"]  # '.' and '_' are literal, '*' is the wildcard
    assert ids(id="a?1") == []
    assert ids(id="*1") == ["b.1", "a.1"]


def test_a_cursor_from_another_search_or_tampered_is_refused(
    store: SqlStore, clock: FakeClock
) -> None:
    for i in range(3):
        store.create(f"p{i}", timeout_at=clock() + HOUR)
    cursor = store.search(limit=1).cursor
    assert cursor is not None
    with pytest.raises(InvalidArgument, match="other filters"):
        store.search(state="pending", limit=1, cursor=cursor)
    for bad in ["not-a-cursor", cursor[:-4], "e30=", 42]:
        with pytest.raises(InvalidArgument, match="cursor"):
            store.search(limit=1, cursor=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [0, -1, 1001, 10**9, 2.5, "10", True])
def test_search_limit_outside_1_to_1000_is_refused(store: SqlStore, limit: object) -> None:
    with pytest.raises(InvalidArgument, match="limit must be an integer from 1 to 1000"):
        store.search(limit=limit)  # type: ignore[arg-type]


def test_search_with_an_unknown_state_is_refused(store: SqlStore) -> None:
    with pytest.raises(InvalidArgument, match="pending, resolved, rejected"):
        store.search(state="done")  # type: ignore[arg-type]


def test_collect_deletes_only_promises_settled_longer_ago_than_retention(
    store: SqlStore, clock: FakeClock
) -> None:
    store.create("old", timeout_at=clock() + HOUR, ikey="k-old", tags={"kind": "x"})
    store.resolve("old")
    store.create("waiting", timeout_at=clock() + 30 * 24 * HOUR)
    clock.advance(2 * 24 * HOUR)
    store.create("new", timeout_at=clock() + HOUR)
    store.resolve("new")
    assert store.collect(max_age=timedelta(days=1)) == 1
    with pytest.raises(PromiseNotFound):
        store.get("old")
    assert {p.id for p in store.search().promises} == {"waiting", "new"}
    assert store.search(tags={"kind": "x"}).promises == []
    # Idempotence lasts as long as the record: the old key now makes a new promise.
    assert store.create("old", timeout_at=clock() + HOUR, ikey="k-old").fresh


def test_a_settled_promise_cannot_be_changed_even_by_raw_sql(
    store: SqlStore, clock: FakeClock
) -> None:
    store.create("p1", timeout_at=clock() + HOUR)
    store.resolve("p1", value=Value("1"))
    with pytest.raises(InvariantViolation, match="settled promise never changes"):
        raw(store, "UPDATE promises SET value_data = '2' WHERE id = 'p1'")
    assert store.get("p1").value.data == "1"


def test_a_row_that_breaks_an_invariant_is_reported_not_returned(
    store: SqlStore, clock: FakeClock
) -> None:
    store.create("p1", timeout_at=clock() + HOUR)
    raw(store, "UPDATE promises SET settled_at = 5 WHERE id = 'p1'")  # pending, yet settled?
    with pytest.raises(InvariantViolation, match="p1"):
        store.get("p1")


# -- waiting --------------------------------------------------------------------------


def listening(store: SqlStore, id: str) -> bool:
    """A waiter in ``store`` listens for ``id`` and the store's change feed is up: a settle
    from now on reaches it (the waiter is blocked, not still starting)."""
    waiters = store.waiters
    return id in waiters._by_id and waiters.feed().ready.is_set()


async def test_wait_wakes_at_once_when_this_process_settles(store_url: str) -> None:
    with open_store(store_url, poll_interval=30) as store:  # polling would take 30 s
        store.create("p1", timeout_at=store.clock() + HOUR)
        waiter = asyncio.create_task(store.wait("p1", timeout=20))
        await eventually(lambda: listening(store, "p1"))
        started = time.monotonic()
        await asyncio.to_thread(store.resolve, "p1", value=Value("done"))
        p = await asyncio.wait_for(waiter, 5)
        assert p.state == "resolved" and p.value.data == "done"
        assert time.monotonic() - started < 5


async def test_wait_sees_a_settle_from_another_store_at_once_without_polling(
    store_url: str,
) -> None:
    # The waiter's store never polls within the test: only the change feed
    # (LISTEN/NOTIFY, or the watch on the SQLite file) can wake it in time.
    with open_store(store_url, poll_interval=30) as waiter_store, open_store(store_url) as other:
        waiter_store.create("p1", timeout_at=waiter_store.clock() + HOUR)
        waiter = asyncio.create_task(waiter_store.wait("p1", timeout=20))
        await eventually(lambda: listening(waiter_store, "p1"))
        await asyncio.to_thread(other.resolve, "p1")
        p = await asyncio.wait_for(waiter, 5)
        assert p.state == "resolved"


async def test_wait_returns_the_pending_promise_at_its_deadline(
    store: SqlStore, clock: FakeClock
) -> None:
    store.create("p1", timeout_at=clock() + HOUR)
    p = await asyncio.wait_for(store.wait("p1", timeout=0.1), 5)
    assert p.pending


async def test_wait_wakes_at_the_promises_own_timeout(store_url: str) -> None:
    with open_store(store_url, poll_interval=30) as store:
        store.create("p1", timeout_at=store.clock() + 150)
        p = await asyncio.wait_for(store.wait("p1", timeout=20), 5)
        assert p.state == "rejected_timedout"


async def test_wait_for_an_unknown_promise_is_not_found(store: SqlStore) -> None:
    with pytest.raises(PromiseNotFound):
        await store.wait("nobody", timeout=1)


async def test_reads_asked_for_together_share_one_query_and_answer_each_caller(
    store: SqlStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        store.create(f"r{n}", timeout_at=clock() + HOUR)
    store.resolve("r0", value=Value("zero"))
    queries: list[object] = []
    real_aread = store.db.aread

    async def counted(fn: object) -> object:
        queries.append(fn)
        return await real_aread(fn)  # type: ignore[arg-type]

    monkeypatch.setattr(store.db, "aread", counted)
    cancelled = asyncio.ensure_future(store.aget_many(["r3"]))
    reads = [
        asyncio.ensure_future(read)
        for read in (
            store.aget_many(["r0", "r1"]),
            store.aget("r2"),
            store.aget_many(["r1", "nobody"]),
            store.aget("nobody"),
            store.aget_many(["r4", "r3"], strict=True),
        )
    ]
    await asyncio.sleep(0)  # every read has asked; the query has not run yet
    cancelled.cancel()
    many, two, lenient, unknown, last = await asyncio.gather(*reads, return_exceptions=True)
    assert len(queries) == 1  # one query for all of them
    assert many["r0"].state == "resolved" and many["r0"].value.data == "zero"
    assert list(many) == ["r0", "r1"] and many["r1"].pending
    assert two.id == "r2"
    assert list(lenient) == ["r1"]  # not strict: the unknown id is left out
    assert isinstance(unknown, PromiseNotFound)  # strict: only this caller fails
    assert list(last) == ["r4", "r3"]
    assert cancelled.cancelled()
    # The next turn of the loop reads again: it sees what changed since.
    store.resolve("r1")
    assert (await store.aget("r1")).state == "resolved" and len(queries) == 2


async def test_a_failed_shared_read_fails_every_caller_with_the_stores_error(
    store: SqlStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create("r0", timeout_at=clock() + HOUR)

    async def broken(fn: object) -> object:
        raise StoreUnavailable("the database is down")

    monkeypatch.setattr(store.db, "aread", broken)
    outcomes = await asyncio.gather(
        store.aget("r0"), store.aget_many(["r0"]), return_exceptions=True
    )
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)


def test_promises_are_counted_by_tag_value_and_state(store: SqlStore, clock: FakeClock) -> None:
    later = clock() + 3_600_000
    for n in range(3):
        store.create(f"a{n}", timeout_at=later, tags={"kind": "a"})
    store.create("b0", timeout_at=later, tags={"kind": "b"})
    store.create("b1", timeout_at=clock() + 10, tags={"kind": "b"})
    store.create("other", timeout_at=later, tags={"team": "x"})
    store.resolve("a0")
    store.cancel("a1")
    clock.advance(20)  # b1's timeout passes: counted as every reader sees it, timed out
    assert store.count_by_tag("kind") == {
        ("a", "resolved"): 1,
        ("a", "rejected_canceled"): 1,
        ("a", "pending"): 1,
        ("b", "pending"): 1,
        ("b", "rejected_timedout"): 1,
    }
    assert store.count_by_tag("nothing") == {}
