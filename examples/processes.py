"""The demos' child processes (a server, a worker), their logs shown and read.

Each child's stderr is passed on to ours line by line, marked with the child's name
(``[server] ...``, ``[worker 2] ...``), so the reader sees what it does; the demo reads
the same lines for what it needs: where a server listens, an error a step logged.

A server is started on port 0 unless told otherwise: it binds a free port and says
which in its start line, together with its database. The demo talks to the URL its
own child announced for its own database, so it can never mistake another program on
some port for its server. A server restarted after a kill asks for the port it had.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENT_TOOLS = str(Path(sys.executable).parent / "agent-tools")
#: What ``agent-tools serve --http`` logs once its socket is bound.
_SERVING = re.compile(r"serving MCP over HTTP at (http://\S+?)/mcp; database (\S+);")


class Child:
    """A process whose log (stderr) is shown, marked with ``name``, and kept."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=dict(env), stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, errors="replace",
        )  # fmt: skip
        self.lines: list[str] = []
        self.ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._pass_on, name=f"log of {name}", daemon=True).start()

    def _pass_on(self) -> None:
        if self.proc.stderr is None:  # pragma: no cover - always piped
            return
        for line in self.proc.stderr:
            sys.stderr.write(f"[{self.name}] {line}")
            sys.stderr.flush()
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def find(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        """The first line logged so far that matches ``pattern``."""
        with self._changed:
            return next(filter(None, map(pattern.search, self.lines)), None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        """The first line matching ``pattern``, waiting up to ``timeout`` seconds; None
        if the process ended (its log closed) or the time ran out first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next(filter(None, map(pattern.search, self.lines)), None)
                left = deadline - time.monotonic()
                if found is not None or self.ended or left <= 0:
                    return found
                self._changed.wait(left)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


class Server(Child):
    """``agent-tools serve --http`` on ``port`` (0: a free one), found where it says it
    listens. Raises ``SystemExit`` with the reason if it does not come up."""

    def __init__(self, db: Path, port: int, jobs: str, env: Mapping[str, str],
                 name: str = "server") -> None:  # fmt: skip
        db = db.resolve()
        command = [AGENT_TOOLS, "serve", "--http", "--port", str(port), "--db", str(db),
                   "--jobs", jobs]  # fmt: skip
        super().__init__(name, command, env)
        started = self.wait_for(_SERVING, timeout=60)
        if started is None:
            self.stop()
            asked = f"port {port}" if port else "a free port"
            raise SystemExit(
                f"the server did not start on {asked} (status {self.proc.returncode}); "
                "its log is above"
            )
        url, database = started[1], started[2]
        if not database.endswith(str(db)):  # the CLI's sqlite URL for our file
            self.stop()
            raise SystemExit(f"the server at {url} reports database {database}, not {db}")
        self.url = f"{url}/mcp"
        self.port = int(url.rsplit(":", 1)[1])
