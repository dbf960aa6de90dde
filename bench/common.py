"""What the MCP benchmarks share: latency percentiles and a server process to measure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentiles(samples: list[float], digits: int = 1) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (seconds), in ms."""
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, digits),
        "p99_ms": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000, digits),
        "max_ms": round(ordered[-1] * 1000, digits),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(
    argv: list[str], port: int, *, env: Mapping[str, str] | None = None,
    log_path: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """``argv`` running until it listens on ``port``; SIGTERMed after. Its stderr goes to
    ``log_path`` (kept) or a temporary file: a pipe nobody reads would fill and stall it."""
    path = log_path or tempfile.mktemp(suffix=".log")
    with open(path, "ab") as errors:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors,
                                env=None if env is None else {**os.environ, **env})  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError(
                        f"{argv[:3]} did not start: {Path(path).read_text()}"
                    ) from None
                time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if log_path is None:
            os.unlink(path)
