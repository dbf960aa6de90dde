"""Wake-ups for this process: waiters on promises, and workers looking for tasks.

Two sources wake them:

* the store's own writer, after each commit, with the ids it settled and whether a
  task may have become claimable (a settle made in this process wakes at once);
* the change feed (``promises.changes``), for what other processes committed: on
  PostgreSQL it names the settled ids and the kinds of ready tasks; on SQLite it only
  says that something changed, and one query over every id waited on here finds
  which of them settled.

Waiters are asyncio tasks on any event loop; the wake-up is a thread-safe
``call_soon_threadsafe(event.set)``, one per loop for a whole commit of this
process (``promises.loopcalls``). A woken waiter re-reads what it waits for, so a spurious
wake-up costs a read and never a wrong answer. A worker says when it will look anyway
(``Listener.due``): a commit of this process that makes a task ready only after then
(a job going to sleep) does not wake it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from promises.changes import ChangeFeed
from promises.errors import PromiseError
from promises.loopcalls import call_soon
from promises.records import Promise

log = logging.getLogger("promises.waiting")


@dataclass(eq=False)
class Listener:
    """One waiter: its event, and what woke it since it last looked."""

    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    kinds: frozenset[str] | None = None
    #: Called (on ``loop``) instead of setting the event, for watchers.
    callback: Callable[[], None] | None = None
    #: Ids that may have settled since ``take``, with the promise when it is known.
    woken: dict[str, Promise | None] = field(default_factory=dict)
    #: For a worker: when it looks for tasks anyway (store ms). A task made ready no
    #: sooner than that is not worth a wake-up. None: every change wakes it.
    due: int | None = None

    def take(self) -> dict[str, Promise | None]:
        """What woke this waiter since the last call (and clear the event)."""
        self.event.clear()
        woken, self.woken = self.woken, {}
        return woken

    def _wake(self) -> None:
        call_soon(self.loop, self.callback or self.event.set)


#: Finds which of the given ids are settled (or past their timeout) now.
SettledAmong = Callable[[list[str]], list[str]]


class Waiters:
    def __init__(self, make_feed: Callable[[], ChangeFeed], settled_among: SettledAmong) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, set[Listener]] = {}
        self._workers: set[Listener] = set()
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

    def _add(self, listener: Listener, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._by_id.setdefault(key, set()).add(listener)
        self.feed()

    def _remove(self, listener: Listener, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                listeners = self._by_id.get(key)
                if listeners is not None:
                    listeners.discard(listener)
                    if not listeners:
                        del self._by_id[key]

    @contextmanager
    def listen(self, ids: Iterable[str]) -> Iterator[Listener]:
        """A listener woken whenever one of ``ids`` may have settled, while the block
        runs. ``listener.take()`` says which, with the promise when it is known."""
        listener = Listener(asyncio.get_running_loop())
        keys = list(dict.fromkeys(ids))
        self._add(listener, keys)
        try:
            yield listener
        finally:
            self._remove(listener, keys)

    def watch(self, id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on this event loop whenever ``id`` may have settled, until
        the returned function is called. (No task per watch: a worker watches every job
        it runs.)"""
        listener = Listener(asyncio.get_running_loop(), callback=callback)
        self._add(listener, [id])
        return lambda: self._remove(listener, [id])

    @contextmanager
    def listen_tasks(self, kinds: Collection[str]) -> Iterator[Listener]:
        """A listener whose event is set whenever a task of one of ``kinds`` may have
        become claimable (before its ``due``, when it has one)."""
        listener = Listener(asyncio.get_running_loop(), kinds=frozenset(kinds))
        with self._lock:
            self._workers.add(listener)
        self.feed()
        try:
            yield listener
        finally:
            with self._lock:
                self._workers.discard(listener)

    # -- waking ------------------------------------------------------------------------

    def committed(
        self, settled: dict[str, Promise | None], kinds: set[str] | None,
        later: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        """Called by this store's writer after a commit (``later``: kinds made ready
        only from a later time, with the earliest)."""
        self._wake(settled, kinds, later)

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
        self._wake(dict.fromkeys(ids), kinds)

    def _wake(
        self, found: dict[str, Promise | None], kinds: set[str] | None,
        later: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        woken: set[Listener] = set()
        with self._lock:
            for key, promise in found.items():
                for listener in self._by_id.get(key, ()):
                    if promise is not None or key not in listener.woken:
                        listener.woken[key] = promise
                    woken.add(listener)
            if kinds is None:
                woken |= self._workers
            elif kinds:
                woken |= {w for w in self._workers if w.kinds is None or w.kinds & kinds}
            if later and kinds is not None:
                woken |= {w for w in self._workers if _sooner(w, later)}
        for listener in woken:
            listener._wake()


def _sooner(worker: Listener, later: dict[str, int]) -> bool:
    """Whether a task made ready at these times is due before ``worker`` looks anyway."""
    due = worker.due
    return any(
        (worker.kinds is None or kind in worker.kinds) and (due is None or at < due)
        for kind, at in later.items()
    )
