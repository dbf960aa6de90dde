"""Seeing what other processes changed, at once: a change feed per store.

* **PostgreSQL**: the store's triggers ``NOTIFY`` on the channel ``promises:<schema>``
  (``s<id>`` when a promise settles, ``t<kind>`` when a task becomes ready). The feed
  keeps one connection that ``LISTEN``s, on every machine. After a lost connection
  it reconnects and reports "anything may have changed", since notifications sent
  meanwhile are gone.
* **SQLite**: the processes on one file ring a doorbell (``promises.bell``): a
  datagram to each other listening process after a commit that settled promises or
  made tasks ready, naming them. A slow check of ``PRAGMA data_version`` (a counter
  that moves when another connection commits) covers writers that do not ring.

Listeners re-read what they care about (in one query): a spurious wake-up costs a read,
a missed one is caught by the fallback check; neither gives a wrong answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from promises.backends import DRIVER_ERRORS, Backend
from promises.bell import MAX_DATAGRAM, Bell, decode

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
    """Rings of the doorbell (``promises.bell``) from the other processes on this file,
    and a slow check of ``PRAGMA data_version`` for writers that do not ring. Without a
    doorbell (no socket could be bound) that check runs every few milliseconds."""

    def __init__(
        self,
        backend: Backend,
        on_change: OnChange,
        bell: Bell,
        *,
        fallback: float = 2.0,
        poll: float = 0.005,
    ) -> None:
        super().__init__(on_change)
        self.backend = backend
        self.bell = bell
        self.fallback, self.poll = fallback, poll

    def _run(self) -> None:
        try:
            receiver: socket.socket | None = self.bell.listen()
        except OSError as exc:
            log.warning("no doorbell for %s (%s); checking for changes by polling",
                        self.backend.path, exc)  # fmt: skip
            receiver = None
        conn: sqlite3.Connection | None = None
        version = 0
        checked = time.monotonic()
        every = self.fallback if receiver is not None else self.poll
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = self.backend.connect("changes")
                        version = conn.execute("PRAGMA data_version").fetchone()[0]
                        self.ready.set()
                    left = max(every - (time.monotonic() - checked), 0)
                    fd = receiver.fileno() if receiver is not None else None
                    if self._wait(fd, left) and receiver is not None:
                        self._drain(receiver)
                    if self._stop.is_set():
                        break
                    if time.monotonic() - checked >= every:
                        checked = time.monotonic()
                        current = conn.execute("PRAGMA data_version").fetchone()[0]
                        if current != version:
                            version = current
                            self._report(None, None)
                except DRIVER_ERRORS as exc:
                    log.warning("watching the database for changes failed (%s); retrying", exc)
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._stop.wait(0.5)
        finally:
            if conn is not None:
                conn.close()
            if receiver is not None:
                self.bell.close_listener(receiver)

    def _drain(self, receiver: socket.socket) -> None:
        ids: list[str] | None = []
        kinds: set[str] | None = set()
        while True:
            try:
                data = receiver.recv(MAX_DATAGRAM + 1024)
            except (BlockingIOError, InterruptedError):
                break
            got_ids, got_kinds = decode(data)
            ids = None if ids is None or got_ids is None else ids + got_ids
            kinds = None if kinds is None or got_kinds is None else kinds | got_kinds
        if ids is None or kinds is None or ids or kinds:
            self._report(ids, kinds)


class PostgresFeed(ChangeFeed):
    def __init__(
        self,
        backend: Backend,
        on_change: OnChange,
        *,
        own: Callable[[], Collection[int]] = frozenset,
        fallback: float = 2.0,
    ) -> None:
        super().__init__(on_change)
        self.backend = backend
        self.fallback = fallback
        #: The backend pids of this store's own writers: their notifications are
        #: echoes of what this process was told already, when it committed.
        self.own = own
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
                own = self.own()
                for note in conn.notifies(timeout=0.0):
                    if note.pid in own:
                        continue
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


def change_feed(
    backend: Backend,
    on_change: OnChange,
    bell: Bell | None,
    own: Callable[[], Collection[int]] = frozenset,
) -> ChangeFeed:
    if backend.name == "postgresql" or bell is None:
        return PostgresFeed(backend, on_change, own=own)
    return SqliteFeed(backend, on_change, bell)


def wait_ready(feed: ChangeFeed, timeout: float = 10.0) -> bool:
    """Until the feed listens (so no change after this call is missed)."""
    return feed.ready.wait(timeout)


__all__ = ["ChangeFeed", "OnChange", "PostgresFeed", "SqliteFeed", "change_feed", "wait_ready"]
