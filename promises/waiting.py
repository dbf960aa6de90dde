"""Wake-ups for this process: waiters on promises, and workers looking for tasks.

Two sources wake them:

* the store's own writer, after each commit, with the ids it settled and whether a
  task may have become claimable (a settle made in this process wakes at once);
* the change feed (``promises.changes``), for what other processes committed: on
  PostgreSQL it names the settled ids and the kinds of ready tasks; on SQLite it only
  says that something changed, and one query over every id waited on here finds
  which of them settled.

Waiters are asyncio tasks on any event loop; the wake-up is a thread-safe
``call_soon_threadsafe(event.set)``. A woken waiter re-reads what it waits for, so a
spurious wake-up costs a read and never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from promises.changes import ChangeFeed, wait_ready
from promises.errors import PromiseError

log = logging.getLogger("promises.waiting")


@dataclass(eq=False)
class _Entry:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    kinds: frozenset[str] | None = None

    def wake(self) -> None:
        # RuntimeError: that loop has closed, and its waiter with it.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.event.set)


#: Finds which of the given ids are settled (or past their timeout) now.
SettledAmong = Callable[[list[str]], list[str]]


class Waiters:
    def __init__(self, make_feed: Callable[[], ChangeFeed], settled_among: SettledAmong) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, set[_Entry]] = {}
        self._workers: set[_Entry] = set()
        self._make_feed = make_feed
        self._settled_among = settled_among
        self._feed: ChangeFeed | None = None

    # -- the change feed ---------------------------------------------------------------

    def feed(self) -> ChangeFeed:
        """The running change feed (started on first use)."""
        with self._lock:
            if self._feed is None:
                self._feed = self._make_feed()
                self._feed.start()
            feed = self._feed
        return feed

    def stop(self) -> None:
        with self._lock:
            feed, self._feed = self._feed, None
        if feed is not None:
            feed.stop()

    # -- listening ---------------------------------------------------------------------

    @contextmanager
    def listen(self, ids: Iterable[str]) -> Iterator[asyncio.Event]:
        """An event set whenever one of ``ids`` may have settled, while the block runs."""
        entry = _Entry(asyncio.get_running_loop())
        keys = list(dict.fromkeys(ids))
        with self._lock:
            for key in keys:
                self._by_id.setdefault(key, set()).add(entry)
        self.feed()
        try:
            yield entry.event
        finally:
            with self._lock:
                for key in keys:
                    waiters = self._by_id.get(key)
                    if waiters is not None:
                        waiters.discard(entry)
                        if not waiters:
                            del self._by_id[key]

    @contextmanager
    def listen_tasks(self, kinds: Collection[str]) -> Iterator[asyncio.Event]:
        """An event set whenever a task of one of ``kinds`` may have become claimable."""
        entry = _Entry(asyncio.get_running_loop(), kinds=frozenset(kinds))
        with self._lock:
            self._workers.add(entry)
        wait_ready(self.feed())
        try:
            yield entry.event
        finally:
            with self._lock:
                self._workers.discard(entry)

    # -- waking ------------------------------------------------------------------------

    def committed(self, settled: list[str], tasks_changed: bool) -> None:
        """Called by this store's writer after a commit."""
        self._wake(settled, None if tasks_changed else set())

    def external(self, ids: list[str] | None, kinds: set[str] | None) -> None:
        """Called by the change feed with another process's changes."""
        if ids is None:
            with self._lock:
                watched = list(self._by_id)
            if watched:
                try:
                    ids = self._settled_among(watched)
                except PromiseError as exc:
                    log.warning("could not check what settled (%s); waking every waiter", exc)
                    ids = watched
            else:
                ids = []
        self._wake(ids, kinds)

    def _wake(self, ids: list[str], kinds: set[str] | None) -> None:
        with self._lock:
            entries = {entry for key in ids for entry in self._by_id.get(key, ())}
            if kinds is None:
                entries |= self._workers
            elif kinds:
                entries |= {w for w in self._workers if w.kinds is None or w.kinds & kinds}
        for entry in entries:
            entry.wake()
