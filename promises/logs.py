"""Logging that stays readable when something fails over and over.

A worker that cannot reach its database, or a schedule that fails at every tick, must
not write a traceback every second (a Claude Desktop log grows ~150 MB a day that way).
``Throttled`` logs the first occurrence of each kind of problem in full, then at most
one line per interval with how many were held back.
"""

from __future__ import annotations

import logging
import threading
import time


class Throttled:
    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def warning(
        self, key: str, message: str, *args: object, exc: BaseException | None = None
    ) -> None:
        """Log ``message`` for ``key``: with the traceback the first time, as one line
        at most once per interval after that."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.interval:
                self._last[key] = (last[0], last[1] + 1)
                return
            held = 0 if last is None else last[1]
            self._last[key] = (now, 0)
        if held:
            message += f" ({held} more like this in the last {self.interval:.0f} s)"
        self.logger.warning(message, *args, exc_info=exc if last is None else None)

    def recovered(self, key: str, message: str, *args: object) -> None:
        """Forget ``key``; log ``message`` if it had been failing."""
        with self._lock:
            failing = self._last.pop(key, None) is not None
        if failing:
            self.logger.info(message, *args)
