"""Which workers run on a store, the kinds each has loaded, and whether it is alive.

A worker writes its row when it starts and when it stops; while it holds jobs its
lease heartbeats also note that it was seen. An idle worker writes nothing. Whether a
worker is alive is judged without writes: a process on this host is looked up by its
pid; on PostgreSQL, a worker elsewhere is alive while its listening connection is
(its application_name shows in ``pg_stat_activity``).

This is what lets ``probe_status`` say "waiting for a worker with kind X (none seen
since ...)" instead of leaving a job silently pending.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from promises.database import Tx
from promises.store import SqlStore
from promises.tasks import Owner, _pid_alive

#: A worker on another host, without a listener to look up, counts as alive this long
#: after it was last seen.
_REMOTE_GRACE_MS = 120_000


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    kinds: tuple[str, ...]
    started_at: int
    #: When it last started, stopped, claimed or heartbeated.
    seen_at: int
    stopped_at: int | None
    alive: bool


@dataclass(frozen=True)
class KindAvailability:
    kind: str
    #: A live worker has this kind loaded.
    alive: bool
    #: When a worker with this kind was last known to run (ms), or None: never.
    last_seen: int | None


class Presence:
    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.sql = store.sql
        self._host = socket.gethostname()
        self._cache: tuple[float, list[WorkerInfo]] | None = None

    async def register(self, owner: Owner, kinds: Collection[str], listener: str | None) -> None:
        params = {"id": owner.id, "host": owner.host, "pid": owner.pid,
                  "kinds": json.dumps(sorted(kinds)), "listener": listener,
                  "now": self.store.clock()}  # fmt: skip
        await self.store.db.awrite(lambda tx: tx.execute(self.sql.insert_worker, params))
        self._cache = None

    async def stopped(self, owner: Owner) -> None:
        params = {"id": owner.id, "now": self.store.clock()}
        await self.store.db.awrite(lambda tx: tx.execute(self.sql.worker_stopped, params))
        self._cache = None

    def prune_tx(self, tx: Tx, older_than: timedelta) -> int:
        cutoff = self.store.clock() - int(older_than.total_seconds() * 1000)
        return tx.execute(self.sql.prune_workers, {"cutoff": cutoff})

    def workers(self, *, max_age_s: float = 1.0) -> list[WorkerInfo]:
        """Every worker the store knows, newest first, with liveness (cached briefly:
        a page listing many jobs asks once)."""
        cached = self._cached(max_age_s)
        return cached if cached is not None else self.store.db.read(self._workers_tx)

    async def aworkers(self, *, max_age_s: float = 1.0) -> list[WorkerInfo]:
        cached = self._cached(max_age_s)
        return cached if cached is not None else await self.store.db.aread(self._workers_tx)

    def _cached(self, max_age_s: float) -> list[WorkerInfo] | None:
        cached = self._cache
        if cached is not None and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        return None

    def _workers_tx(self, tx: Tx) -> list[WorkerInfo]:
        rows = tx.all(self.sql.workers)
        names = [row[4] for row in rows if row[4] and row[7] is None and row[1] != self._host]
        live: set[str] = set()
        if names and self.sql.live_listeners:
            live = {r[0] for r in tx.all(self.sql.live_listeners, {"names": names})}
        now = self.store.clock()
        found = [self._info(row, live, now) for row in rows]
        self._cache = (time.monotonic(), found)
        return found

    def _info(self, row: Any, live: set[str], now: int) -> WorkerInfo:
        id, host, pid, kinds, listener, started_at, seen_at, stopped_at = row
        if stopped_at is not None:
            alive = False
        elif host == self._host:
            alive = _pid_alive(pid)
        elif listener:
            alive = listener in live
        else:
            alive = now - seen_at < _REMOTE_GRACE_MS
        return WorkerInfo(
            id, host, pid, tuple(json.loads(kinds)), started_at, seen_at, stopped_at, alive
        )

    def availability(
        self, kinds: Collection[str], workers: list[WorkerInfo] | None = None
    ) -> dict[str, KindAvailability]:
        workers = self.workers() if workers is None else workers
        out: dict[str, KindAvailability] = {}
        for kind in kinds:
            having = [w for w in workers if kind in w.kinds]
            alive = any(w.alive for w in having)
            seen = [w.stopped_at or w.seen_at for w in having]
            out[kind] = KindAvailability(kind, alive, max(seen) if seen else None)
        return out
