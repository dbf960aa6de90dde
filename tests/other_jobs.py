"""A second module of job kinds, loaded only by some workers in the tests: two servers
with different ``--jobs`` sharing one database must not fail each other's jobs."""

from __future__ import annotations

import os

from promises import Context, durable


def where() -> int:
    return os.getpid()


@durable(name="other.whoami")
async def whoami(ctx: Context, tag: str) -> dict[str, object]:
    """Returns the pid of the worker that ran its step."""
    return {"tag": tag, "pid": await ctx.run(where)}
