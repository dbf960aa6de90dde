"""The ``agent-tools`` command.

For now it has one subcommand, ``status``, which opens (creating on first use) the
store and prints what it holds; it is what ``make run`` runs until the MCP server
lands. Output is JSON on stdout; logs and errors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from agent_tools.config import DB_ENV, resolve_db_url
from promises import SEARCH_STATES, PromiseError, SearchState, SqlStore, open_store


def _count(store: SqlStore, state: SearchState) -> int:
    total, cursor = 0, None
    while True:
        page = store.search(state=state, limit=1000, cursor=cursor)
        total += len(page.promises)
        if page.cursor is None:
            return total
        cursor = page.cursor


def status(db: str | None) -> dict[str, object]:
    url = resolve_db_url(db)
    with open_store(url) as store:
        return {"db": url, "promises": {state: _count(store, state) for state in SEARCH_STATES}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agent-tools", description="Durable async tools for LLM agents."
    )
    parser.add_argument(
        "--db", help=f"database path or URL (default: ${DB_ENV}, else a file in the user data dir)"
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("status", help="open the store and print what it holds (the default)")
    args = parser.parse_args(argv)
    try:
        report = status(args.db)
    except PromiseError as exc:
        print(f"agent-tools: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
