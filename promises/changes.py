"""Seeing what other processes changed, at once: a change feed per store.

* **PostgreSQL**: the store's triggers ``NOTIFY`` on the channel ``promises:<schema>``
  (``s<id>`` when a promise settles, ``t<kind>`` when a task becomes ready). The feed
  keeps one connection that ``LISTEN``s, on every machine. After a lost connection
  it reconnects and reports "anything may have changed", since notifications sent
  meanwhile are gone.
* **SQLite**: every commit, by any process, writes the ``-wal`` file. The feed watches
  the database's directory with inotify (Linux) and, on an event, checks
  ``PRAGMA data_version`` (a counter in shared memory that moves when another
  connection commits) before reporting "something changed". Without inotify it checks
  the counter every few milliseconds instead.

Either way the feed only says *that* something changed (and, on PostgreSQL, which ids
and kinds); listeners re-read what they care about. A slow fallback check runs too, so
a missed event delays a wake-up, it never loses one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promises.backends import DRIVER_ERRORS, Backend

log = logging.getLogger("promises.changes")

#: ``(settled ids, ready kinds)``; ``None`` for either means "unknown: maybe anything".
OnChange = Callable[[list[str] | None, set[str] | None], None]


class ChangeFeed:
    """A background thread reporting other processes' changes to ``on_change``."""

    #: The application_name of the listening connection (PostgreSQL), which shows that
    #: the process is alive for as long as it is connected.
    listener: str | None = None

    def __init__(self, on_change: OnChange) -> None:
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promises-changes", daemon=True)
        self.ready = threading.Event()
        # Written to on stop, so a thread blocked waiting for events wakes at once.
        self._bell_r, self._bell_w = os.pipe()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        os.write(self._bell_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for fd in (self._bell_r, self._bell_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _wait(self, fd: int | None, timeout: float) -> bool:
        """Wait until ``fd`` is readable (True), the timeout passes or stop is asked."""
        watched = [self._bell_r] if fd is None else [fd, self._bell_r]
        readable, _, _ = select.select(watched, [], [], timeout)
        return fd is not None and fd in readable and not self._stop.is_set()

    def _run(self) -> None:
        raise NotImplementedError

    def _report(self, ids: list[str] | None, kinds: set[str] | None) -> None:
        try:
            self.on_change(ids, kinds)
        except Exception:
            log.exception("a change listener failed")


class SqliteFeed(ChangeFeed):
    def __init__(
        self,
        backend: Backend,
        on_change: OnChange,
        *,
        fallback: float = 2.0,
        poll: float = 0.005,
        coalesce: float = 0.002,
        settle_time: float = 0.2,
    ) -> None:
        super().__init__(on_change)
        if backend.path is None:
            raise ValueError("a SQLite feed needs a file")
        self.backend = backend
        self.path: Path = backend.path
        self.fallback, self.poll, self.coalesce = fallback, poll, coalesce
        #: How long to look for a commit after its -wal write was seen.
        self.settle_time = settle_time

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        notify = _inotify(self.path)
        names = {self.path.name, self.path.name + "-wal"}
        version = 0
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = self.backend.connect("changes")
                        version = conn.execute("PRAGMA data_version").fetchone()[0]
                        self.ready.set()
                    patience = 0.0
                    if notify is not None:
                        if self._wait(notify.fileno(), self.fallback):
                            events = notify.read(timeout=0)
                            if events and not any(e.name in names for e in events):
                                continue
                            # A commit writes the -wal file first and makes itself visible
                            # just after (in shared memory, which raises no event); the
                            # events read may be those of several commits. Watch until
                            # the counter has moved and then stayed still for a moment.
                            patience = self.settle_time
                    else:
                        self._wait(None, self.poll)
                    version = self._watch(conn, version, patience)
                except DRIVER_ERRORS as exc:
                    log.warning("watching the database for changes failed (%s); retrying", exc)
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._stop.wait(0.5)
        finally:
            if conn is not None:
                conn.close()
            if notify is not None:
                notify.close()

    def _watch(self, conn: sqlite3.Connection, version: int, patience: float) -> int:
        """Report each move of ``data_version`` within ``patience`` seconds; stop early
        once it moved and then kept still for a moment. Returns the last version seen."""
        started = time.monotonic()
        moved_at: float | None = None
        step, quiet = self.poll / 5, self.poll
        while not self._stop.is_set():
            current: int = conn.execute("PRAGMA data_version").fetchone()[0]
            now = time.monotonic()
            if current != version:
                version, moved_at = current, now
                self._report(None, None)
                self._stop.wait(self.coalesce)  # a burst of commits makes one report
                continue
            if now - started >= patience or (moved_at is not None and now - moved_at >= quiet):
                break
            self._wait(None, step)
        return version


def _inotify(path: Path) -> Any:
    """An inotify watch on the database's directory, or None where there is none."""
    try:
        from inotify_simple import INotify, flags  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        notify = INotify()
        notify.add_watch(
            str(path.parent), flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.CLOSE_WRITE
        )
    except OSError as exc:  # e.g. too many inotify instances: fall back to polling
        log.info("no inotify watch on %s (%s); checking for changes by polling", path.parent, exc)
        return None
    return notify


class PostgresFeed(ChangeFeed):
    def __init__(self, backend: Backend, on_change: OnChange, *, fallback: float = 2.0) -> None:
        super().__init__(on_change)
        self.backend = backend
        self.fallback = fallback
        self._role = f"listen:{os.urandom(6).hex()}"
        self.listener = f"{backend.application_name}:{self._role}"[:63]

    def _run(self) -> None:
        conn: Any = None
        pause = 0.1
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.backend.connect(self._role)
                    schema = conn.execute("SELECT current_schema()").fetchone()[0]
                    channel = f"promises:{schema}".replace('"', '""')
                    conn.execute(f'LISTEN "{channel}"')
                    if self.ready.is_set():
                        self._report(None, None)  # what happened while we were away is lost
                    self.ready.set()
                    pause = 0.1
                ids: list[str] = []
                kinds: set[str] = set()
                if not self._wait(conn.fileno(), self.fallback):
                    continue
                for note in conn.notifies(timeout=0.0):
                    payload = note.payload
                    if payload.startswith("s"):
                        ids.append(payload[1:])
                    elif payload.startswith("t"):
                        kinds.add(payload[1:])
                if ids or kinds:
                    self._report(ids, kinds)
            except DRIVER_ERRORS as exc:
                if self._stop.is_set():
                    break
                log.warning("listening for changes failed (%s); reconnecting", exc)
                if conn is not None:
                    with contextlib.suppress(*DRIVER_ERRORS):
                        conn.close()
                conn = None
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)
        if conn is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                conn.close()


def change_feed(backend: Backend, on_change: OnChange) -> ChangeFeed:
    if backend.name == "postgresql":
        return PostgresFeed(backend, on_change)
    return SqliteFeed(backend, on_change)


def wait_ready(feed: ChangeFeed, timeout: float = 10.0) -> bool:
    """Until the feed listens (so no change after this call is missed)."""
    return feed.ready.wait(timeout)


__all__ = ["ChangeFeed", "OnChange", "PostgresFeed", "SqliteFeed", "change_feed", "wait_ready"]
