"""One answer about time on several machines (issue 9, item 8): two stores on one
database, with clocks 100 ms apart, never read two outcomes for one promise. The first
reader that sees a timeout stores it; a settle from a node whose clock is behind then
finds it timed out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from promises import Runtime, SqlStore, Value, open_store
from tests.conftest import START, FakeClock

HOUR = 3_600_000


@pytest.fixture
def nodes(store_url: str) -> Iterator[tuple[SqlStore, SqlStore, FakeClock, FakeClock]]:
    ahead, behind = FakeClock(START + 100), FakeClock(START)
    with open_store(store_url, clock=ahead) as a, open_store(store_url, clock=behind) as b:
        yield a, b, ahead, behind


def test_a_timeout_one_node_read_is_the_outcome_every_node_reads(
    nodes: tuple[SqlStore, SqlStore, FakeClock, FakeClock],
) -> None:
    a, b, _ahead, _behind = nodes
    b.create("p", timeout_at=START + 50)  # expired for a (ahead), not yet for b
    assert a.get("p").state == "rejected_timedout"
    late = b.resolve("p", value=Value("late"))  # b thinks there is still time
    assert late.deduplicated and late.promise.state == "rejected_timedout"
    for node in (a, b):
        assert node.get("p").state == "rejected_timedout"
        assert [p.state for p in node.search("p").promises] == ["rejected_timedout"]


def test_a_settle_from_the_slower_node_first_is_the_outcome_everywhere(
    nodes: tuple[SqlStore, SqlStore, FakeClock, FakeClock],
) -> None:
    a, b, _ahead, _behind = nodes
    b.create("p", timeout_at=START + 50)
    assert b.resolve("p", value=Value("in time")).fresh  # before its timeout, by b's clock
    for node in (a, b):
        p = node.get("p")
        assert (p.state, p.value.data) == ("resolved", "in time")


def test_a_jobs_view_stores_what_it_shows(
    nodes: tuple[SqlStore, SqlStore, FakeClock, FakeClock],
) -> None:
    a, b, _ahead, _behind = nodes
    b.create("t", timeout_at=START + 50, tags={"promises:timer": "true"})
    assert Runtime(a).view("t").promise.state == "resolved"  # a timer resolves at its time
    assert b.get("t").state == "resolved"
    with pytest.raises(Exception, match="already resolved"):
        b.cancel("t", strict=True)
