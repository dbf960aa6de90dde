"""Where the store lives: ``--db``, else ``$AGENT_TOOLS_DB``, else a SQLite file in the
user's data directory (created on first use)."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_path

DB_ENV = "AGENT_TOOLS_DB"


def default_db_url() -> str:
    directory: Path = user_data_path("agent-tools", appauthor=False)
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'agent-tools.db'}"


def resolve_db_url(cli_value: str | None) -> str:
    """A bare path means a SQLite file; URLs pass through unchanged."""
    value = cli_value or os.environ.get(DB_ENV) or default_db_url()
    if "://" not in value:
        value = f"sqlite:///{Path(value).expanduser().resolve()}"
    return value
