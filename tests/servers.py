"""Starting test servers on ports they pick themselves.

A port a test picks (bind to 0, close, hand the number to a server) can be taken by
another test's server in between — the suite runs in several processes — and the test
then talks to the wrong server. So servers start on port 0 and say in their log where
they listen; tests read it there. A restarted server reuses the port it got.
"""

from __future__ import annotations

import re
import subprocess
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
