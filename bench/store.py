"""Promise store figures on a temporary SQLite file; prints JSON.

1. Sequential durable create / settle / get per second through ``SqlStore``, beside
   raw ``sqlite3`` doing the same single-row insert-and-commit (same pragmas, same
   table and indexes) in the same run, with the ratio. Target: create >= 50% of raw.
2. Get-by-id and one-page search latency (p50/p99) with 100,000 and 1,000,000
   promises in the store. Targets at 1,000,000: get p99 < 1 ms; a page (100) of
   pending-by-tag < 5 ms. The large stores are bulk-loaded (not measured): 10% pending,
   tags ``kind`` (one of 10 values) and ``owner`` (one of 1,000).

    python bench/store.py [--ops 3000] [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from promises import open_store
from promises.backends import _sqlite_pragmas

FAR = 10**13


def per_second(n: int, fn: Callable[[int], object]) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 4),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 4),
    }


def latency(n: int, fn: Callable[[int], object]) -> dict[str, float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def raw_sqlite_create(path: Path, n: int) -> float:
    open_store(f"sqlite:///{path}").close()  # the same table, indexes and trigger
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in _sqlite_pragmas("FULL", 30_000):
        conn.execute(pragma)
    sql = (
        "INSERT INTO promises (id, state, timer, timeout_at, created_at) "
        "VALUES (?, 'pending', 0, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING seq"
    )

    def insert(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, (f"raw-{i}", FAR, i)).fetchall()
        conn.execute("COMMIT")

    rate = per_second(n, insert)
    conn.close()
    return rate


def sequential(directory: Path, n: int) -> dict[str, object]:
    raw = raw_sqlite_create(directory / "raw.db", n)
    with open_store(f"sqlite:///{directory / 'store.db'}") as store:
        create = per_second(n, lambda i: store.create(f"p-{i}", timeout_at=FAR))
        settle = per_second(n, lambda i: store.resolve(f"p-{i}"))
        get = per_second(n, lambda i: store.get(f"p-{i}"))
    return {
        "operations": n,
        "create_per_s": round(create),
        "raw_sqlite3_insert_commit_per_s": round(raw),
        "create_vs_raw": round(create / raw, 3),
        "create_target_met": create / raw >= 0.5,
        "settle_per_s": round(settle),
        "get_per_s": round(get),
    }


def bulk_load(path: Path, size: int) -> None:
    open_store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    rng = random.Random(7)
    batch = 50_000
    for base in range(0, size, batch):
        rows, tags = [], []
        for i in range(base, min(base + batch, size)):
            pending = i % 10 == 0
            kind, owner = f"kind-{rng.randrange(10)}", f"owner-{rng.randrange(1000)}"
            rows.append(
                (
                    i + 1,
                    f"job-{i}",
                    "pending" if pending else "resolved",
                    None if pending else '{"ok":true}',
                    FAR,
                    json.dumps(
                        {"kind": kind, "owner": owner}, separators=(",", ":"), sort_keys=True
                    ),
                    1_700_000_000_000 + i,
                    None if pending else 1_700_000_000_001 + i,
                )
            )
            tags += [(i + 1, "kind", kind, int(pending)), (i + 1, "owner", owner, int(pending))]
        conn.executemany(
            "INSERT INTO promises (seq, id, state, timer, value_data, timeout_at, tags, "
            "created_at, settled_at) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "INSERT INTO promise_tags (seq, key, value, pending) VALUES (?, ?, ?, ?)", tags
        )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def at_size(directory: Path, size: int, samples: int) -> dict[str, object]:
    path = directory / f"store-{size}.db"
    started = time.perf_counter()
    bulk_load(path, size)
    loaded_s = time.perf_counter() - started
    rng = random.Random(size)
    with open_store(f"sqlite:///{path}") as store:
        ids = [f"job-{rng.randrange(size)}" for _ in range(samples)]
        kinds = [f"kind-{rng.randrange(10)}" for _ in range(samples)]
        owners = [f"owner-{rng.randrange(1000)}" for _ in range(samples)]
        for i in range(200):  # warm the page cache the way a running server would be
            store.get(ids[i])
            store.search(state="pending", tags={"kind": kinds[i]})
        return {
            "promises": size,
            "bulk_load_s": round(loaded_s, 1),
            "get_by_id": latency(samples, lambda i: store.get(ids[i])),
            "search_page_pending_by_kind_100": latency(
                samples, lambda i: store.search(state="pending", tags={"kind": kinds[i]}, limit=100)
            ),
            "search_page_pending_by_owner_100": latency(
                samples,
                lambda i: store.search(state="pending", tags={"owner": owners[i]}, limit=100),
            ),
            "search_page_id_prefix_100": latency(
                samples, lambda i: store.search(f"job-{i}*", limit=100)
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        directory = Path(tmp)
        result = {
            "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version,
            "sequential": sequential(directory, args.ops),
            "lookups": [
                at_size(directory, int(s), args.samples) for s in args.sizes.split(",") if s
            ],
        }
    big = result["lookups"][-1] if result["lookups"] else None
    if big is not None:
        result["lookup_targets_met_at_largest"] = {
            "get_p99_under_1ms": big["get_by_id"]["p99_ms"] < 1.0,
            "pending_by_tag_page_p99_under_5ms": big["search_page_pending_by_kind_100"]["p99_ms"]
            < 5.0,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
