"""Bad inputs get an ``InvalidArgument`` that says what was wrong and what is allowed,
and lose nothing the store had already acknowledged."""

from __future__ import annotations

import sqlite3

import pytest

from promises import InvalidArgument, SqlStore, Value, open_store
from promises.backends import _set_wal
from tests.conftest import FakeClock

HOUR = 3_600_000


@pytest.fixture
def store(tmp_path: object, clock: FakeClock) -> SqlStore:
    s = open_store(f"sqlite:///{tmp_path}/inputs.db", clock=clock, max_payload_bytes=1000)
    s.create("kept", timeout_at=clock() + HOUR, ikey="k")
    return s


def _still_intact(store: SqlStore) -> None:
    p = store.get("kept")
    assert p.pending and p.ikey_create == "k"


@pytest.mark.parametrize(
    ("bad_id", "message"),
    [
        ("", "1 to 512 characters"),
        ("x" * 513, "1 to 512 characters"),
        (42, "must be a string"),
        (b"bytes", "must be a string"),
        (None, "must be a string"),
        ("tab\there", "control characters"),
        ("nul\x00", "control characters"),
    ],
)
def test_a_bad_id_is_refused_with_what_is_allowed(
    store: SqlStore, clock: FakeClock, bad_id: object, message: str
) -> None:
    for call in (
        lambda: store.create(bad_id, timeout_at=clock() + HOUR),  # type: ignore[arg-type]
        lambda: store.resolve(bad_id),  # type: ignore[arg-type]
        lambda: store.get(bad_id),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidArgument, match=message):
            call()
    _still_intact(store)


@pytest.mark.parametrize(
    ("timeout_at", "message"),
    [
        (-1, "out of range"),
        (-(10**15), "out of range"),
        (10**18, "out of range"),
        (1.5, "integer count of milliseconds"),
        ("tomorrow", "integer count of milliseconds"),
        (None, "integer count of milliseconds"),
        (True, "integer count of milliseconds"),
    ],
)
def test_a_negative_or_absurd_timeout_is_refused(
    store: SqlStore, timeout_at: object, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        store.create("p", timeout_at=timeout_at)  # type: ignore[arg-type]
    _still_intact(store)


def test_an_oversized_payload_is_refused_with_the_limit(store: SqlStore, clock: FakeClock) -> None:
    with pytest.raises(InvalidArgument, match="1001 bytes; the limit is 1000 bytes"):
        store.create("p", timeout_at=clock() + HOUR, param=Value("x" * 1001))
    with pytest.raises(InvalidArgument, match="the limit is 1000 bytes"):
        store.resolve("kept", value=Value("é" * 501))  # 1002 bytes in UTF-8
    with pytest.raises(InvalidArgument, match="the limit is 1000 bytes"):
        store.resolve("kept", value=Value("", {"h": "x" * 1000}))
    _still_intact(store)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("plain string", "must be a promises.Value"),
        (Value(b"bytes"), "data must be text"),  # type: ignore[arg-type]
        (Value("x", {"h": 1}), "must map str to str"),  # type: ignore[dict-item]
        (Value("x", ["h"]), "mapping of str to str"),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_value_is_refused(store: SqlStore, value: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        store.resolve("kept", value=value)  # type: ignore[arg-type]
    _still_intact(store)


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"kind": 7}, "must map str to str"),
        ({3: "x"}, "must map str to str"),
        (["kind"], "mapping of str to str"),
        ({"": "x"}, "too long: keys are 1 to 256"),
        ({"k" * 257: "x"}, "keys are 1 to 256"),
        ({"k": "v" * 1025}, "values at most 1024"),
        ({f"k{i}": "v" for i in range(65)}, "at most 64 tags"),
        ({"promises:owner": "me"}, "reserved prefix"),
        ({"promises:timer": "yes"}, "reserved prefix"),
    ],
)
def test_a_bad_tag_is_refused(
    store: SqlStore, clock: FakeClock, tags: object, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        store.create("p", timeout_at=clock() + HOUR, tags=tags)  # type: ignore[arg-type]
    _still_intact(store)


@pytest.mark.parametrize("ikey", ["", "k" * 513, 5])
def test_a_bad_idempotency_key_is_refused(store: SqlStore, clock: FakeClock, ikey: object) -> None:
    with pytest.raises(InvalidArgument, match="idempotency key"):
        store.create("p", timeout_at=clock() + HOUR, ikey=ikey)  # type: ignore[arg-type]


def test_strict_must_be_a_bool(store: SqlStore) -> None:
    with pytest.raises(InvalidArgument, match="strict must be True or False"):
        store.resolve("kept", strict="yes")  # type: ignore[arg-type]
    _still_intact(store)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/x", "unsupported database"),
        ("sqlite://", "needs a SQLite file"),
        ("sqlite:///:memory:", "needs a SQLite file"),
        ("sqlite:///file:x.db%3Fmode%3Dmemory", "not a SQLite URI"),
        ("sqlite:///x.db?synchronous=OFF", "use FULL or NORMAL"),
        ("::not a url::", "cannot parse database url"),
    ],
)
def test_a_bad_store_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        open_store(url)


def test_a_database_in_a_missing_directory_is_refused_saying_which(tmp_path: object) -> None:
    # Not "unavailable, retry": the path is wrong, and retrying will not fix it.
    with pytest.raises(InvalidArgument, match="no/such/dir' does not exist"):
        open_store(f"sqlite:///{tmp_path}/no/such/dir/x.db")


def test_a_database_that_cannot_keep_a_write_ahead_log_is_refused_at_once() -> None:
    # Its journal stays "memory" whatever is asked: said at once, not waited on.
    conn = sqlite3.connect(":memory:")
    try:
        with pytest.raises(InvalidArgument, match="journal stays 'memory'"):
            _set_wal(conn, busy_ms=30_000)
    finally:
        conn.close()
