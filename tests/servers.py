"""Starting test servers on ports they pick themselves.

A port a test picks (bind to 0, close, hand the number to a server) can be taken by
another test's server in between — the suite runs in several processes — and the test
then talks to the wrong server. So servers start on port 0 and say in their log where
they listen; tests read it there. A restarted server reuses the port it got.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.waiting import until

#: What a server's start line says: agent-tools ("serving MCP over HTTP at URL") and
#: the proxy's upstream test server both print their URL.
_URL = re.compile(r"http://127\.0\.0\.1:(\d+)/mcp")


def log_text(log: Path) -> str:
    return log.read_text() if log.exists() else ""


def listening_port(proc: subprocess.Popen[bytes], log: Path, logged_before: str) -> int:
    """The port a server started on port 0 says it listens on (in ``log``, after the
    ``logged_before`` text it already held)."""

    def said() -> int | None:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} did not start: {log_text(log)}")
        found = _URL.search(log_text(log)[len(logged_before) :])
        return int(found.group(1)) if found else None

    port: int = until(said, what="the server says where it listens")
    return port


ROOT = Path(__file__).parent.parent


class Listening:
    """A server process on a local port, its stderr kept in a file. ``argv(port)`` is
    its command for a port: 0 the first time (it picks one and logs it), then the port
    it got, so a server started again after a kill is found where it was."""

    def __init__(
        self, argv: Callable[[int], list[str]], errors: Path, env: Mapping[str, str] = {}
    ) -> None:
        self.argv, self.errors, self.env = argv, errors, dict(env)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        logged_before = log_text(self.errors)
        with self.errors.open("ab") as errors:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                self.argv(self.port), cwd=ROOT, env={**os.environ, **self.env},
                stdout=subprocess.DEVNULL, stderr=errors,
            )  # fmt: skip
        self.port = listening_port(self.proc, self.errors, logged_before)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
