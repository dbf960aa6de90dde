"""Wake-ups for waiters in this process.

A settle commits on whatever thread ran it; waiters are asyncio tasks on some event
loop. ``Notifier.notify`` hands each waiter's loop a thread-safe callback, so a
waiter in this process wakes at once. Settlements made by *other* processes are
seen by the waiter's bounded poll instead (see ``Store.wait``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class Notifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @contextmanager
    def listen(self, key: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``key`` is notified, for as long as the block runs."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(key, set()).add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._waiters[key]

    def notify(self, keys: Iterable[str]) -> None:
        with self._lock:
            targets = [entry for key in keys for entry in self._waiters.get(key, ())]
        for loop, event in targets:
            # RuntimeError: that loop has closed, and its waiter with it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
