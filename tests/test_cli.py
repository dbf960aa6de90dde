"""The ``agent-tools`` command as a user runs it: a real subprocess on a real file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from promises import open_store


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_status_creates_the_store_on_first_use_and_counts_promises(tmp_path: Path) -> None:
    db = tmp_path / "data" / "store.db"
    db.parent.mkdir()
    first = _run("--db", str(db), "status")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["promises"] == {"pending": 0, "resolved": 0, "rejected": 0}
    with open_store(f"sqlite:///{db}") as store:
        store.create("a", timeout_at=store.clock() + 60_000)
        store.create("b", timeout_at=store.clock() + 60_000)
        store.resolve("b")
    second = _run("status", env={"AGENT_TOOLS_DB": str(db)})
    assert json.loads(second.stdout)["promises"] == {"pending": 1, "resolved": 1, "rejected": 0}


def test_a_bad_database_url_is_a_clear_error_on_stderr(tmp_path: Path) -> None:
    result = _run("--db", "mysql://nowhere/x", "status")
    assert result.returncode == 2 and result.stdout == ""
    assert "unsupported database 'mysql'" in result.stderr
