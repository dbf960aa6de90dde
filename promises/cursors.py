"""Search cursors: an opaque position bound to the filters it was made for.

A cursor carries the last ``seq`` of a page and a digest of the query, so a cursor
used with other filters, edited, or invented is refused with a clear error instead of
returning a wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping

from promises.errors import InvalidArgument
from promises.validation import check_seq


def query_digest(pattern: str, state: str | None, tags: Mapping[str, str]) -> str:
    material = json.dumps([pattern, state, sorted(tags.items())])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def encode_cursor(seq: int, digest: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": seq, "q": digest}).encode()).decode()


def decode_cursor(cursor: object, digest: str) -> int | None:
    if cursor is None:
        return None
    try:
        if not isinstance(cursor, str):
            raise TypeError
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        seq, query = check_seq(data["s"]), data["q"]
    except Exception as exc:
        raise InvalidArgument(
            "cursor is not one this store handed out; pass the cursor from the previous "
            "page's result unchanged, or None for the first page"
        ) from exc
    if query != digest:
        raise InvalidArgument(
            "cursor belongs to a search with other filters; use it only with the same "
            "id pattern, state and tags, or pass None to start over"
        )
    return seq
