"""Many threads and many processes creating and settling the same ids on one store:
exactly one fresh transition per promise and per step, every other call deduplicated
or refused by the rules, and no "database is locked" reaching a caller."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import pytest

from promises import PromiseAlreadySettled, open_store
from tests.waiting import until

IDS = 60
ACTIONS = ["resolve", "reject", "cancel"]


def contend(url: str, worker: int, barrier: object = None) -> list[tuple[str, str, str]]:
    """Create every id with one shared key, then settle each with this worker's key.
    Returns (id, step, outcome) for every call."""
    outcomes: list[tuple[str, str, str]] = []
    with open_store(url) as store:
        if barrier is not None:
            barrier.wait()  # type: ignore[attr-defined]
        for i in range(IDS):
            pid = f"p{i}"
            t = store.create(pid, timeout_at=store.clock() + 3_600_000, ikey="shared")
            outcomes.append((pid, "create", "fresh" if t.fresh else "dedup"))
        for i in range(IDS):
            pid, action = f"p{i}", ACTIONS[(worker + i) % 3]
            try:
                t = getattr(store, action)(pid, ikey=f"w{worker}")
                outcomes.append((pid, "settle", f"fresh:{action}" if t.fresh else "dedup"))
            except PromiseAlreadySettled:
                outcomes.append((pid, "settle", "refused"))
    return outcomes


def _check(url: str, results: list[list[tuple[str, str, str]]]) -> None:
    fresh = Counter((pid, step) for r in results for pid, step, o in r if o.startswith("fresh"))
    assert set(fresh.values()) == {1} and len(fresh) == 2 * IDS
    settled_by = {
        pid: o.split(":")[1] for r in results for pid, step, o in r if o.startswith("fresh:")
    }
    with open_store(url) as store:
        for pid, action in settled_by.items():
            assert (
                store.get(pid).state
                == {"resolve": "resolved", "reject": "rejected", "cancel": "rejected_canceled"}[
                    action
                ]
            )
    # Every settle but the fresh one was refused: each worker used its own key.
    settles = Counter(o.split(":")[0] for r in results for _, step, o in r if step == "settle")
    assert settles == {"fresh": IDS, "refused": IDS * (len(results) - 1)}


def test_threads_contending_on_the_same_ids_make_one_fresh_transition_each(store_url: str) -> None:
    open_store(store_url).close()  # tables exist before the race starts
    workers = 8
    barrier = threading.Barrier(workers)
    results: list[list[tuple[str, str, str]]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def run(w: int) -> None:
        try:
            results[w] = contend(store_url, w, barrier)
        except BaseException as exc:  # surfaced below: no error may reach a caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    _check(store_url, results)


@pytest.mark.slow
def test_processes_contending_on_one_store_make_one_fresh_transition_each(store_url: str) -> None:
    open_store(store_url).close()
    workers = 4
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        with ctx.Pool(workers) as pool:
            results = pool.starmap(
                contend, [(store_url, w, barrier) for w in range(workers)], chunksize=1
            )
    _check(store_url, results)


def open_new_files(directory: str, rounds: int, barrier: object) -> list[str]:
    """Open brand-new database files at the same instant as the other processes; returns
    the errors (none expected)."""
    errors = []
    for n in range(rounds):
        barrier.wait()  # type: ignore[attr-defined]
        try:
            with open_store(f"sqlite:///{directory}/new-{n}.db") as store:
                store.create(f"p-{id(store)}", timeout_at=store.clock() + 60_000)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    return errors


@pytest.mark.slow
def test_processes_opening_a_brand_new_database_at_the_same_instant_all_succeed(
    tmp_path: object,
) -> None:
    # Four processes race to create each file, switch it to WAL and create its tables.
    workers, rounds = 4, 40
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        with ctx.Pool(workers) as pool:
            results = pool.starmap(
                open_new_files, [(str(tmp_path), rounds, barrier)] * workers, chunksize=1
            )
    assert [e for r in results for e in r] == []
    with open_store(f"sqlite:///{tmp_path}/new-0.db") as store:
        assert len(store.search().promises) == workers


def test_writes_waiting_together_share_one_transaction_on_postgres(pg_url: str) -> None:
    """One writer per store on PostgreSQL too: the writes queued while it commits go
    in its next transaction together (group commit), and a process's own transactions
    never take row locks against each other (several writers once deadlocked: a lease
    renewal against a batch of finishes, a second's wait for the detector)."""
    with open_store(pg_url) as store:
        db = store.db
        hold, held = threading.Event(), threading.Event()

        def blocking(tx: object) -> None:  # keeps the writer busy while the others queue
            held.set()
            hold.wait(10)

        first = threading.Thread(target=db.write, args=(blocking,))
        first.start()
        assert held.wait(10)
        txids: list[int] = []

        def write() -> None:
            txids.append(db.write(lambda tx: tx.scalar("SELECT txid_current()")))

        writers = [threading.Thread(target=write) for _ in range(8)]
        for thread in writers:
            thread.start()
        try:
            # A second writer would take them at once; one writer leaves them queued.
            until(lambda: db._units.qsize() >= 8, what="8 writes queued behind the first")
        finally:
            hold.set()
            for thread in [first, *writers]:
                thread.join(10)
        assert len(txids) == 8 and len(set(txids)) == 1
