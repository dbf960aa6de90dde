"""The store's writer on PostgreSQL: a one-statement unit alone in its batch runs in
autocommit (one round trip, not three), and stays as safe as a transaction: a second
statement begins one, a refused statement writes nothing, and a connection the server
ended while it was idle is replaced before anything is sent on it."""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import promises.database
from promises import OutcomeUnknown, PromiseError, SqlStore, StoreUnavailable, Value, open_store
from promises.database import Statement, Tx
from promises.errors import InvariantViolation
from tests.conftest import PG_URL
from tests.waiting import until

pytestmark = pytest.mark.postgres


def autocommitted(tx: Tx, statement: str = "SELECT 1") -> bool:
    """Run a statement; whether it was its own transaction (none is left open)."""
    tx.scalar(statement)
    status = tx._cursor.connection.info.transaction_status
    return bool(status == psycopg.pq.TransactionStatus.IDLE)


@pytest.fixture
def pg(pg_url: str) -> Iterator[SqlStore]:
    with open_store(pg_url) as store:
        store.db.write(lambda tx: tx.execute("CREATE TABLE notes (n INT PRIMARY KEY)"))
        yield store


def alone(store: SqlStore, fn: Any, *, durable: bool = True) -> Any:
    return store.db.write(fn, durable=durable, one_statement=True)


def notes(store: SqlStore) -> list[int]:
    return [n for (n,) in store.db.read(lambda tx: tx.all("SELECT n FROM notes ORDER BY n"))]


def test_a_durable_unit_alone_is_its_own_flushed_transaction(pg: SqlStore) -> None:
    flushes = pg.db.flushes
    assert alone(pg, autocommitted) is True
    assert alone(pg, lambda tx: tx.scalar("SHOW synchronous_commit")) == "on"
    assert pg.db.flushes == flushes + 2
    # In a batch of its own kind, or declared as more: a transaction as before.
    assert pg.db.write(autocommitted) is False


def test_a_non_durable_unit_alone_commits_without_a_flush(pg: SqlStore) -> None:
    flushes = pg.db.flushes
    assert alone(pg, autocommitted, durable=False) is True
    assert alone(pg, lambda tx: tx.scalar("SHOW synchronous_commit"), durable=False) == "off"
    alone(pg, lambda tx: tx.execute("INSERT INTO notes VALUES (1)"), durable=False)
    assert notes(pg) == [1]  # committed: another connection reads it
    assert pg.db.flushes == flushes
    # Its notifications are this process's own (the change feed skips them).
    quick = alone(pg, lambda tx: tx.scalar("SELECT pg_backend_pid()"), durable=False)
    assert quick in pg.db.writer_pids()
    # The writer's own connection still flushes.
    assert alone(pg, lambda tx: tx.scalar("SHOW synchronous_commit")) == "on"


@pytest.mark.parametrize("durable", [True, False])
def test_a_second_statement_begins_a_transaction_for_the_rest(pg: SqlStore, durable: bool) -> None:
    def unit(tx: Tx) -> tuple[bool, bool]:
        first = autocommitted(tx)
        tx.execute("INSERT INTO notes VALUES (1)")
        return first, autocommitted(tx, "INSERT INTO notes VALUES (2) RETURNING n")

    assert alone(pg, unit, durable=durable) == (True, False)
    assert notes(pg) == [1, 2]

    def fails_after_two(tx: Tx) -> None:
        tx.scalar("SELECT 1")  # writes nothing, as the contract asks
        tx.execute("INSERT INTO notes VALUES (3)")
        tx.execute("INSERT INTO notes VALUES (4)")
        raise PromiseError("changed its mind")

    with pytest.raises(PromiseError, match="changed its mind"):
        alone(pg, fails_after_two, durable=durable)
    assert notes(pg) == [1, 2]  # the rest was one transaction, rolled back
    assert alone(pg, autocommitted, durable=durable) is True


@pytest.mark.parametrize("durable", [True, False])
def test_a_refused_statement_writes_nothing_and_the_writer_goes_on(
    pg: SqlStore, durable: bool
) -> None:
    alone(pg, lambda tx: tx.execute("INSERT INTO notes VALUES (1)"), durable=durable)
    with pytest.raises(PromiseError):  # a duplicate key: refused, said as our error
        alone(pg, lambda tx: tx.execute("INSERT INTO notes VALUES (2), (1)"), durable=durable)
    assert notes(pg) == [1]
    alone(pg, lambda tx: tx.execute("INSERT INTO notes VALUES (2)"), durable=durable)
    assert notes(pg) == [1, 2]


def _terminate(pid: int) -> None:
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        until(
            lambda: admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone() == (0,),
            what=f"backend {pid} ended",
        )  # fmt: skip


@pytest.mark.parametrize("durable", [True, False])
def test_a_connection_ended_while_idle_is_replaced_before_the_statement(
    pg: SqlStore, durable: bool
) -> None:
    # A statement in autocommit that fails on a broken connection may have committed or
    # not: the writer must find the end first, and lose no write and raise nothing.
    pid = alone(pg, lambda tx: tx.scalar("SELECT pg_backend_pid()"), durable=durable)
    _terminate(pid)
    alone(pg, lambda tx: tx.execute("INSERT INTO notes VALUES (1)"), durable=durable)
    assert notes(pg) == [1]
    assert alone(pg, lambda tx: tx.scalar("SELECT pg_backend_pid()"), durable=durable) != pid


def test_a_flush_makes_every_commit_before_it_durable(pg: SqlStore) -> None:
    # PostgreSQL flushes at a commit only a transaction that wrote to the log: a flush
    # that only took a transaction id left the commits before it in memory.
    def unflushed(tx: Tx) -> str:
        tx.execute("INSERT INTO notes VALUES (1) ON CONFLICT (n) DO UPDATE SET n = 1")
        return str(tx.scalar("SELECT pg_current_wal_insert_lsn()"))

    behind = []
    for _ in range(20):
        written = pg.db.write(unflushed, durable=False)
        pg.db.flush()
        lag = pg.db.read(
            lambda tx, at=written: tx.scalar(
                f"SELECT pg_wal_lsn_diff('{at}', pg_current_wal_flush_lsn())"
            )
        )
        behind.append(lag)
    assert all(lag <= 0 for lag in behind), behind


@pytest.mark.parametrize("durable", [True, False])
def test_a_unit_refused_after_its_first_statement_committed_says_it_was_done_in_part(
    pg: SqlStore, durable: bool
) -> None:
    # Its contract allows a first statement that writes, then more (a fallback): if the
    # rest is refused, the caller must not hear "nothing changed".
    def writes_then_refused(tx: Tx) -> None:
        tx.execute("INSERT INTO notes VALUES (1)")
        tx.execute("INSERT INTO notes VALUES (2), (1)")

    with pytest.raises(OutcomeUnknown, match="done in whole or in part"):
        alone(pg, writes_then_refused, durable=durable)
    assert notes(pg) == [1]


@pytest.mark.parametrize("durable", [True, False])
def test_a_connection_idle_for_long_is_not_trusted_with_autocommit(
    pg: SqlStore, durable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A NAT or a load balancer may drop an idle connection without a word: only a
    # BEGIN finds that safely, or a new connection avoids it.
    pid = alone(pg, lambda tx: tx.scalar("SELECT pg_backend_pid()"), durable=durable)
    monkeypatch.setattr(promises.database, "AUTOCOMMIT_IDLE_S", 0.0)
    if durable:
        assert alone(pg, autocommitted) is False  # in a transaction, on the same connection
        assert alone(pg, lambda tx: tx.scalar("SELECT pg_backend_pid()")) == pid
    else:
        assert alone(pg, autocommitted, durable=False) is True  # on a new connection
        assert alone(pg, lambda tx: tx.scalar("SELECT pg_backend_pid()"), durable=False) != pid


def test_a_connection_on_a_high_descriptor_is_not_mistaken_for_an_ended_one(
    pg_url: str,
) -> None:
    # A busy server holds many files: select() cannot watch a descriptor past 1023.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this process may open only {hard} files; the test needs 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [os.dup(0) for _ in range(1100)]
    try:
        with open_store(pg_url) as store:
            pids = {alone(store, lambda tx: tx.scalar("SELECT pg_backend_pid()")) for _ in range(5)}
            writer = store.db._writers[0]
            assert writer.conn.pgconn.socket > 1023
            assert len(pids) == 1  # never reconnected
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_write_done_in_part_wakes_waiters_to_read_again_and_tells_no_false_settle(
    pg: SqlStore,
) -> None:
    # What it noted after its first statement was rolled back: a settle among that
    # must reach no listener as done; waiters only read again.
    pg.create("p", timeout_at=pg.clock() + 60_000)
    told: list[str] = []
    pg.on_settled(lambda promise: told.append(promise.id))

    def settles_then_refused(tx: Tx) -> None:
        tx.execute("INSERT INTO notes VALUES (1)")
        pg.settle_tx(tx, "p", "resolve", value=Value("42"), ikey="k")
        tx.execute("INSERT INTO notes VALUES (1)")

    with pytest.raises(OutcomeUnknown, match="done in whole or in part"):
        alone(pg, settles_then_refused)
    assert notes(pg) == [1] and pg.get("p").pending and told == []


def test_the_writer_flushes_its_commits_even_where_the_role_says_not_to(pg_url: str) -> None:
    # synchronous_commit = off for the role (or the database) would make every flush,
    # and so every acknowledgement, a no-op.
    import uuid

    role = "r_" + uuid.uuid4().hex[:10]
    schema = pg_url.rsplit("%3D", 1)[1]
    admin = psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True)
    admin.execute(f"CREATE ROLE {role} LOGIN")
    admin.execute(f"GRANT ALL ON SCHEMA {schema} TO {role}")
    admin.execute(f"ALTER ROLE {role} SET synchronous_commit = off")
    try:
        with open_store(pg_url.replace("postgres@", f"{role}@")) as store:
            assert alone(store, lambda tx: tx.scalar("SHOW synchronous_commit")) == "on"
            assert store.db.write(lambda tx: tx.scalar("SHOW synchronous_commit")) == "on"
            # As the role says elsewhere: the quick writer and the readers.
            quick = alone(store, lambda tx: tx.scalar("SHOW synchronous_commit"), durable=False)
            assert quick == "off"
            assert store.db.read(lambda tx: tx.scalar("SHOW synchronous_commit")) == "off"
    finally:
        admin.execute(f"DROP OWNED BY {role}")
        admin.execute(f"DROP ROLE {role}")
        admin.close()


def test_a_write_asked_of_a_closed_store_fails_in_its_future(pg_url: str) -> None:
    import asyncio

    async def run() -> None:
        with open_store(pg_url) as store:
            pass
        future = store.db.awrite_future(lambda tx: None)
        with pytest.raises(StoreUnavailable, match="closed"):
            await future

    asyncio.run(run())


# -- declared first statements, sent ahead together --------------------------------------


def batch_of(
    store: SqlStore, units: list[tuple[Any, Any]], traced: list[str] | None = None,
    *, one_statement: bool = False, durable: bool = True,
) -> list[Any]:  # fmt: skip
    """Run ``units`` (``(fn, first)`` pairs) as one batch: the writer is held by a unit
    that waits until all of them are queued behind it (alone, running no statement: no
    round trip). Each outcome: a value or an error. ``traced``: gets the libpq trace
    of the writer's connection while the batch runs, a line per protocol message."""
    held, queued = threading.Event(), threading.Event()
    holding = threading.Thread(
        target=store.db.write,
        args=(lambda tx: held.wait(30),),
        kwargs={"one_statement": True, "durable": False},
    )
    holding.start()
    until(lambda: store.db._units.qsize() == 0, what="the writer took the holding unit")
    outcomes: list[Any] = [None] * len(units)

    def one(n: int, fn: Any, first: Any) -> None:
        try:
            outcomes[n] = store.db.write(
                fn, first=first, one_statement=one_statement, durable=durable
            )
        except Exception as exc:
            outcomes[n] = exc

    callers = [threading.Thread(target=one, args=(n, *unit)) for n, unit in enumerate(units)]
    for n, caller in enumerate(callers):  # in order: the queue is the batch's order
        caller.start()
        until(lambda n=n: store.db._units.qsize() == n + 1, what=f"unit {n} queued")
    queued.set()
    conn = store.db._writers[0].conn
    if traced is not None:  # the writer waits in the holding unit: its connection is idle
        trace = open(tempfile.mktemp(suffix=".trace"), "w")  # noqa: SIM115
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
    held.set()
    for caller in [holding, *callers]:
        caller.join(30)
    if traced is not None:
        conn.pgconn.untrace()
        trace.close()
        traced += Path(trace.name).read_text().splitlines()
        os.unlink(trace.name)
    return outcomes


def round_trips(trace: list[str]) -> int:
    """How many times the client sent and then waited for the server (in a libpq trace,
    each line begins with F for a message sent, B for one received)."""
    directions = [line[0] for line in trace if line[:1] in ("F", "B")]
    return sum(1 for a, b in itertools.pairwise(directions) if (a, b) == ("F", "B"))


def declared(sql: str, params: dict[str, Any], events: list[str], name: str) -> Any:
    """A first statement that notes when the writer (or its unit) made it."""
    statement = Statement(sql, params)

    def first() -> Statement:
        if f"made {name}" not in events:
            events.append(f"made {name}")
        return statement

    return first


def test_a_batch_sends_its_units_first_statements_ahead_and_each_unit_finds_its_result(
    pg: SqlStore,
) -> None:
    events: list[str] = []
    units = []
    for n in range(5):
        first = declared(
            "INSERT INTO notes VALUES (%(n)s) RETURNING n * 10", {"n": n}, events, str(n)
        )

        def fn(tx: Tx, first: Any = first, n: int = n) -> Any:
            events.append(f"ran {n}")
            return tx.scalar(*first())

        units.append((fn, first))
    traced: list[str] = []
    assert batch_of(pg, units, traced) == [0, 10, 20, 30, 40]
    assert notes(pg) == [0, 1, 2, 3, 4]
    # Every first statement was made (and sent) before any unit ran.
    assert events[:5] == [f"made {n}" for n in range(5)]
    assert events[5:] == [f"ran {n}" for n in range(5)]
    # Two round trips: BEGIN with the five statements, then COMMIT (not seven).
    assert round_trips(traced) == 2, "\n".join(traced)
    assert sum("COMMIT" in line for line in traced if line.startswith("F")) == 1


def test_a_unit_that_goes_on_while_later_units_were_sent_runs_in_order_again(
    pg: SqlStore,
) -> None:
    # The second unit counts the notes twice. Sent ahead, the third unit's insert ran
    # before its second count: the batch runs again in order, and both counts agree.
    events: list[str] = []
    count = "SELECT count(*) FROM notes"
    counted = declared(count, {}, events, "count")

    def counts_twice(tx: Tx) -> tuple[int, int]:
        return tx.scalar(*counted()), tx.scalar(count)

    units = [
        (lambda tx, f=f: tx.scalar(*f()), f)
        for f in [declared("INSERT INTO notes VALUES (1) RETURNING n", {}, events, "1")]
    ]
    units.append((counts_twice, counted))
    third = declared("INSERT INTO notes VALUES (3) RETURNING n", {}, events, "3")
    units.append((lambda tx: tx.scalar(*third()), third))
    assert batch_of(pg, units) == [1, (1, 1), 3]
    assert notes(pg) == [1, 3]


def test_a_first_statement_refused_in_a_batch_fails_its_unit_alone(pg: SqlStore) -> None:
    pg.db.write(lambda tx: tx.execute("INSERT INTO notes VALUES (2)"))
    events: list[str] = []
    units = []
    for n in (1, 2, 3):  # 2 is taken: refused
        first = declared("INSERT INTO notes VALUES (%(n)s) RETURNING n", {"n": n}, events, str(n))
        units.append((lambda tx, f=first: tx.scalar(*f()), first))
    one, two, three = batch_of(pg, units)
    assert (one, three) == (1, 3)
    assert isinstance(two, PromiseError) and "duplicate key" in str(two)
    assert notes(pg) == [1, 2, 3]


def test_a_unit_must_run_the_first_statement_it_declared(pg: SqlStore) -> None:
    events: list[str] = []
    insert = declared("INSERT INTO notes VALUES (%(n)s) RETURNING n", {"n": 1}, events, "1")
    other = declared("INSERT INTO notes VALUES (%(n)s) RETURNING n", {"n": 2}, events, "2")
    last = declared("INSERT INTO notes VALUES (%(n)s) RETURNING n", {"n": 3}, events, "3")
    units = [
        (lambda tx: None, insert),  # declared, never ran: its insert must not stay
        (lambda tx: tx.scalar("SELECT 2"), other),  # ran another statement first
        (lambda tx: tx.scalar(*last()), last),
    ]
    skipped, mismatched, fine = batch_of(pg, units)
    assert isinstance(skipped, InvariantViolation) and "did not run it" in str(skipped)
    assert isinstance(mismatched, InvariantViolation) and "not the one it declared" in str(
        mismatched
    )
    assert fine == 3
    assert notes(pg) == [3]


def test_a_first_statement_that_cannot_be_made_fails_its_unit_alone(pg: SqlStore) -> None:
    events: list[str] = []
    before = declared("INSERT INTO notes VALUES (1) RETURNING n", {}, events, "1")
    after = declared("INSERT INTO notes VALUES (3) RETURNING n", {}, events, "3")

    def broken() -> Statement:
        raise PromiseError("its arguments cannot be written")

    units = [
        (lambda tx: tx.scalar(*before()), before),
        (lambda tx: tx.scalar(*broken()), broken),
        (lambda tx: tx.scalar(*after()), after),
    ]
    one, two, three = batch_of(pg, units)
    assert (one, three) == (1, 3)
    assert isinstance(two, PromiseError) and "cannot be written" in str(two)
    assert notes(pg) == [1, 3]


def test_a_first_statement_the_driver_cannot_send_fails_its_unit_alone(pg: SqlStore) -> None:
    # psycopg raises some errors raw (not as its own), here while encoding a parameter.
    events: list[str] = []
    pg.db.write(lambda tx: tx.execute("CREATE TABLE words (w TEXT)"))
    units = []
    for word in ("one", "\ud800", "three"):  # an unpaired surrogate: not UTF-8
        first = declared("INSERT INTO words VALUES (%(w)s) RETURNING w", {"w": word}, events, word)
        units.append((lambda tx, f=first: tx.scalar(*f()), first))
    one, two, three = batch_of(pg, units)
    assert (one, three) == ("one", "three")
    assert isinstance(two, UnicodeEncodeError)
    assert pg.db.read(lambda tx: tx.all("SELECT w FROM words ORDER BY w")) == [("one",), ("three",)]


# -- one-statement units together: BEGIN, their statements and COMMIT in one round trip --


def inserts(events: list[str], *numbers: int) -> list[tuple[Any, Any]]:
    units = []
    for n in numbers:
        first = declared("INSERT INTO notes VALUES (%(n)s) RETURNING n", {"n": n}, events, str(n))
        units.append((lambda tx, f=first: tx.scalar(*f()), first))
    return units


@pytest.mark.parametrize("durable", [True, False])
def test_one_statement_units_in_a_batch_commit_together_in_one_round_trip(
    pg: SqlStore, durable: bool
) -> None:
    flushes = pg.db.flushes
    traced: list[str] = []
    outcomes = batch_of(pg, inserts([], 1, 2, 3), traced, one_statement=True, durable=durable)
    assert outcomes == [1, 2, 3]
    assert notes(pg) == [1, 2, 3]
    assert round_trips(traced) == 1, "\n".join(traced)
    sent = [line for line in traced if line.startswith("F")]
    assert sum("COMMIT" in line for line in sent) == 1
    # Flushed when a unit is durable; else committed without a flush.
    assert any("synchronous_commit = off" in line for line in sent) is not durable
    assert pg.db.flushes == flushes + (1 if durable else 0)


def test_a_unit_that_goes_on_runs_its_rest_in_a_transaction_of_its_own(pg: SqlStore) -> None:
    events: list[str] = []
    looked = declared("SELECT count(*) FROM notes", {}, events, "look")

    def looks_then_writes_two(tx: Tx) -> int:
        tx.scalar(*looked())  # writes nothing, as the contract asks of a unit that goes on
        tx.execute("INSERT INTO notes VALUES (10)")
        return int(tx.scalar("INSERT INTO notes VALUES (11) RETURNING n"))

    def looks_then_fails(tx: Tx) -> None:
        tx.scalar(*failing())
        tx.execute("INSERT INTO notes VALUES (20)")
        raise PromiseError("changed its mind")

    failing = declared("SELECT count(*) FROM notes", {}, events, "fail")
    units = [*inserts(events, 1), (looks_then_writes_two, looked), (looks_then_fails, failing)]
    units += inserts(events, 3)
    traced: list[str] = []
    one, two, three, four = batch_of(pg, units, traced, one_statement=True)
    assert (one, two, four) == (1, 11, 3)
    assert isinstance(three, PromiseError) and "changed its mind" in str(three)
    assert notes(pg) == [1, 3, 10, 11]  # the failed rest rolled back alone
    # The batch's first round trip sent BEGIN, the four first statements and COMMIT;
    # the rests came after, each in a transaction of its own.
    first_trip = list(itertools.takewhile(lambda line: not line.startswith("B"), traced))
    assert sum("Execute" in line for line in first_trip) == 6, "\n".join(traced)
    assert "COMMIT" in "".join(first_trip) and "(10)" not in "".join(first_trip)
    assert sum('"BEGIN"' in line for line in traced if line.startswith("F")) == 3


def test_a_statement_refused_in_a_batch_together_commits_nothing_of_it(pg: SqlStore) -> None:
    pg.db.write(lambda tx: tx.execute("INSERT INTO notes VALUES (2)"))
    one, two, three = batch_of(pg, inserts([], 1, 2, 3), one_statement=True)
    assert (one, three) == (1, 3)
    assert isinstance(two, PromiseError) and "duplicate key" in str(two)
    assert notes(pg) == [1, 2, 3]


def test_a_batch_on_a_connection_idle_for_long_does_not_send_its_commit_with_it(
    pg: SqlStore,
) -> None:
    # A connection dropped silently may have taken the statements or not: with the
    # COMMIT among them the outcome would be unknown. So it runs as a transaction.
    pg.db.write(lambda tx: tx.scalar("SELECT 1"))
    pg.db._writers[0].conn_used -= promises.database.AUTOCOMMIT_IDLE_S
    traced: list[str] = []
    assert batch_of(pg, inserts([], 1, 2), traced, one_statement=True) == [1, 2]
    assert round_trips(traced) == 2, "\n".join(traced)


def test_a_connection_lost_in_one_units_rest_leaves_the_others_answered(pg: SqlStore) -> None:
    events: list[str] = []
    looked = declared("SELECT count(*) FROM notes", {}, events, "look")

    def looks_then_loses_the_connection(tx: Tx) -> None:
        tx.scalar(*looked())
        tx.scalar("SELECT pg_terminate_backend(pg_backend_pid())")

    units = [*inserts(events, 1), (looks_then_loses_the_connection, looked), *inserts(events, 3)]
    one, two, three = batch_of(pg, units, one_statement=True)
    assert (one, three) == (1, 3)  # committed with the batch, and told so
    assert isinstance(two, OutcomeUnknown) and "in whole or in part" in str(two)
    assert notes(pg) == [1, 3]
    assert batch_of(pg, inserts(events, 4, 5), one_statement=True) == [4, 5]  # reconnected


def test_a_unit_together_that_skips_its_declared_statement_is_told_it_was_committed(
    pg: SqlStore,
) -> None:
    # A unit's bug, not a runtime path: its declared statement went, and committed, with
    # the batch; the unit must hear that rather than that nothing was written.
    events: list[str] = []
    [(_, skipped), (_, raised), last] = inserts(events, 1, 2, 3)

    def raises_first(tx: Tx) -> None:
        raise PromiseError("changed its mind")

    [(_, swapped)] = inserts(events, 4)
    units = [(lambda tx: None, skipped), (raises_first, raised),
             (lambda tx: tx.scalar("SELECT 4"), swapped), last]  # fmt: skip
    outcomes = batch_of(pg, units, one_statement=True)
    for outcome in outcomes[:3]:
        assert isinstance(outcome, InvariantViolation)
        assert "committed with its batch" in str(outcome)
    assert outcomes[3] == 3
    assert notes(pg) == [1, 2, 3, 4]


@pytest.mark.parametrize("together", [True, False])
def test_a_first_statement_whose_answer_cannot_be_read_is_not_called_refused(
    pg: SqlStore, together: bool
) -> None:
    # It committed (alone in autocommit, or with its batch): reading its answer failed
    # after. The caller must hear that it may have been done, not that nothing was.
    events: list[str] = []
    unreadable = declared(
        "INSERT INTO notes VALUES (2) RETURNING 'infinity'::date", {}, events, "2"
    )  # Python has no infinite date
    units = [(lambda tx: tx.scalar(*unreadable()), unreadable)]
    if together:
        units = [*inserts(events, 1), *units, *inserts(events, 3)]
    outcomes = batch_of(pg, units, one_statement=True)
    failed = outcomes[1] if together else outcomes[0]
    assert isinstance(failed, OutcomeUnknown) and "in whole or in part" in str(failed)
    assert notes(pg) == ([1, 2, 3] if together else [2])
