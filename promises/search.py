"""Search: promises by id pattern, state and tags, newest first, in pages.

The statement is built per call (the tag joins vary) from fixed pieces. With tags it
orders by the first tag row's ``seq`` (equal to the promise's), so the database walks
the ``(key, value, seq)`` index backwards and stops at a page instead of sorting every
match; with ``state="pending"`` it walks the partial index of pending promises' tags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from promises.cursors import decode_cursor, encode_cursor, query_digest
from promises.records import SearchPage, SearchState
from promises.rows import promise_from_row
from promises.sql import PROMISE_COLUMNS
from promises.validation import check_search, check_tags

if TYPE_CHECKING:
    from promises.store import SqlStore

REJECTED_STATES = ("rejected", "rejected_canceled", "rejected_timedout")


def _id_pattern(dialect: str, pattern: str, params: dict[str, Any]) -> str:
    if dialect == "sqlite":
        # GLOB is case-sensitive and uses the id index for a literal prefix. Only '*' is
        # a wildcard for callers, so the other GLOB metacharacters are escaped as classes.
        params["pattern"] = "".join(f"[{c}]" if c in "[]?" else c for c in pattern)
        return "p.id GLOB :pattern"
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    params["pattern"] = escaped.replace("*", "%")
    return "p.id LIKE :pattern"


def search(
    store: SqlStore,
    id: str = "*",
    *,
    state: SearchState | None = None,
    tags: Mapping[str, str] | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> SearchPage:
    pattern, state, limit = check_search(id, state, limit)
    checked_tags = check_tags(tags, creating=False)
    digest = query_digest(pattern, state, checked_tags)
    after = decode_cursor(cursor, digest)
    now = store.clock()
    # Any filter on state must see promises whose timeout has passed as settled, and
    # store that first: every reader then sees the same outcome.
    if state is not None:
        from promises.upkeep import sweep_if_needed

        sweep_if_needed(store, now)

    params: dict[str, Any] = {"limit": limit + 1}
    joins: list[str] = []
    conditions: list[str] = []
    order = "p.seq"
    for i, (key, value) in enumerate(sorted(checked_tags.items())):
        alias = f"t{i}"
        on = [f"{alias}.seq = p.seq", f"{alias}.key = :k{i}"]
        params[f"k{i}"] = key
        if value != "*":  # "*" matches any value of the tag
            on.append(f"{alias}.value = :v{i}")
            params[f"v{i}"] = value
        if state == "pending":
            on.append(f"{alias}.pending = 1")
        joins.append(f"JOIN promise_tags {alias} ON " + " AND ".join(on))
        if i == 0:
            order = f"{alias}.seq"
    if pattern != "*":
        conditions.append(_id_pattern(store.backend.name, pattern, params))
    if state == "pending":
        conditions += ["p.state = 'pending'", "p.timeout_at > :now"]
        params["now"] = now
    elif state == "resolved":
        conditions.append("p.state = 'resolved'")
    elif state == "rejected":
        conditions.append("p.state IN ('rejected', 'rejected_canceled', 'rejected_timedout')")
    if after is not None:
        conditions.append(f"{order} < :after")
        params["after"] = after
    columns = ", ".join(f"p.{c.strip()}" for c in PROMISE_COLUMNS.split(","))
    statement = (
        f"SELECT {columns} FROM promises p {' '.join(joins)}"
        + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
        + f" ORDER BY {order} DESC LIMIT :limit"
    )
    if store.backend.name == "postgresql" and pattern != "*":
        statement = statement.replace("LIKE :pattern", "LIKE :pattern ESCAPE '\\'")
    rendered = store.sql.render(statement)
    rows = store.db.read(lambda tx: tx.all(rendered, params))
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1][0], digest) if len(rows) > limit else None
    return SearchPage(store.observe([promise_from_row(r) for r in page]), next_cursor)


def count_by_tag(store: SqlStore, key: str) -> dict[tuple[str, str], int]:
    """How many promises carry the tag ``key``, per (its value, the promise's state):
    one grouped query over the ``(key, value, seq)`` tag index, no promise decoded.
    Pending promises whose timeout has passed are stored as timed out first, as for a
    search by state, so every reader counts the same outcome."""
    from promises.upkeep import sweep_if_needed

    sweep_if_needed(store, store.clock())
    rows = store.db.read(lambda tx: tx.all(tx.sql.count_by_tag, {"key": key}))
    return {(str(value), str(state)): int(n) for value, state, n in rows}
