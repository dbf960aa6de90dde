"""A doorbell between the processes that share one SQLite file.

PostgreSQL tells every listening connection what changed (``NOTIFY``); SQLite has no
such thing. So each process that listens (a worker, a waiter) binds a Unix datagram
socket in a directory that belongs to the database file, and each process that commits
a settle or makes a task ready sends every other socket there one datagram saying what
(the settled ids, the kinds of ready tasks). Nobody polls, nothing is read twice, and a
process's own commits wake nobody else.

* The directory is ``$TMPDIR/promises-<uid>/<hash of the file's path>`` (mode 0700):
  short enough for socket paths, private to the user.
* A peer that died leaves its socket file behind: sending to it fails and the file is
  removed. A peer too busy to drain its socket loses the datagram; its slow fallback
  check of the database's change counter (``PRAGMA data_version``) still wakes it.
* Writers that do not ring (another program writing the file with plain SQL) are seen
  by that fallback check too.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("promises.bell")

#: A datagram larger than this says "anything may have changed" instead.
MAX_DATAGRAM = 60_000
_RECEIVE_BUFFER = 4 * 1024 * 1024


def bell_directory(database: Path) -> Path:
    digest = hashlib.sha256(str(database.resolve()).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"promises-{os.getuid()}" / digest


def encode(ids: Iterable[str], kinds: Iterable[str] | None) -> bytes:
    """``s<id>`` per settled id, ``t<kind>`` per kind made ready, or ``*`` (unknown)."""
    if kinds is None:
        return b"*"
    lines = [f"s{i}" for i in ids] + [f"t{k}" for k in kinds]
    data = "\n".join(lines).encode()
    return data if len(data) <= MAX_DATAGRAM else b"*"


def decode(data: bytes) -> tuple[list[str] | None, set[str] | None]:
    if data == b"*":
        return None, None
    ids, kinds = [], set()
    for line in data.decode(errors="replace").split("\n"):
        if line.startswith("s"):
            ids.append(line[1:])
        elif line.startswith("t"):
            kinds.add(line[1:])
    return ids, kinds


class Bell:
    def __init__(self, database: Path) -> None:
        self.directory = bell_directory(database)
        self._lock = threading.Lock()
        self._sender: socket.socket | None = None
        self._peers: list[str] = []
        self._seen: int | None = None  # the directory's mtime when last listed
        self._own: str | None = None

    # -- receiving ---------------------------------------------------------------------

    def listen(self) -> socket.socket:
        """A socket that receives the other processes' rings (the caller closes it
        with ``close_listener``)."""
        parent = self.directory.parent
        parent.mkdir(mode=0o700, exist_ok=True)
        if parent.stat().st_uid != os.getuid():
            raise PermissionError(f"{parent} belongs to another user")
        self.directory.mkdir(mode=0o700, exist_ok=True)
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"{os.getpid()}-{os.urandom(4).hex()}"
        receiver.bind(str(self.directory / name))
        with contextlib.suppress(OSError):
            receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        receiver.setblocking(False)
        self._own = name
        return receiver

    def close_listener(self, receiver: socket.socket) -> None:
        receiver.close()
        if self._own is not None:
            with contextlib.suppress(OSError):
                (self.directory / self._own).unlink()
            self._own = None

    # -- ringing -----------------------------------------------------------------------

    def _listed(self) -> list[str]:
        try:
            mtime = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        if mtime != self._seen:
            self._peers, self._seen = sorted(os.listdir(self.directory)), mtime
        return self._peers

    def ring(self, ids: Iterable[str], kinds: Iterable[str] | None) -> int:
        """Tell every other listening process; returns how many were told. Never
        raises: a lost ring only delays a wake-up until the fallback check."""
        with self._lock:
            peers = [p for p in self._listed() if p != self._own]
            if not peers:
                return 0
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            data = encode(ids, kinds)
            told = 0
            for peer in peers:
                path = self.directory / peer
                try:
                    self._sender.sendto(data, str(path))
                    told += 1
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        path.unlink()  # its process is gone
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EMSGSIZE):
                        log.debug("could not ring %s: %s", peer, exc)
            return told

    def close(self) -> None:
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
