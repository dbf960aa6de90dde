"""Each job, timer and cron schedule as a resource, ``job://<id>``: reading it gives
its status (the JSON ``probe_status`` shows), and a client that subscribes is told
when it finishes — with ``resources/subscribe`` on 2025-11-25 and
``subscriptions/listen`` on 2026-07-28 — so it can read the result then instead of
polling.

A subscription watches the job's promise with the store's waiters (a settle in any
process wakes it); the notification is sent once, when the job finishes. Watches end
with the job, on unsubscribe, or after ``max_watch_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agent_tools.jobs import SETTLED, JobService
from promises import PromiseError

log = logging.getLogger("agent_tools.resources")

SCHEME = "job://"
TEMPLATE = SCHEME + "{job_id}"
MAX_WATCHES = 1000


def job_id_of(uri: object) -> str | None:
    if isinstance(uri, str) and uri.startswith(SCHEME) and len(uri) > len(SCHEME):
        return uri[len(SCHEME) :]
    return None


class JobResources:
    """The ``job://`` resources and their subscriptions (a server middleware)."""

    def __init__(
        self, service: JobService, bus: InMemorySubscriptionBus, max_watch_s: float = 86_400
    ) -> None:
        self.service = service
        self.bus = bus
        self.max_watch_s = max_watch_s
        self._watches: dict[tuple[int, str], asyncio.Task[None]] = {}

    def register(self, server: MCPServer) -> None:
        service = self.service

        @server.resource(
            TEMPLATE,
            name="job",
            title="A job, timer or schedule",
            description="The status of the job, timer or cron schedule with this id, as "
            "probe_status shows it; subscribe to hear when it finishes.",
            mime_type="application/json",
        )
        async def job(job_id: str) -> str:
            status = (await asyncio.to_thread(service.probe, [job_id]))[0]
            if status["status"] == "unknown":  # the SDK answers a resource not found
                raise ResourceNotFoundError(
                    f"no job, timer or schedule has the id {job_id!r:.80}; list_jobs finds them"
                )
            return json.dumps(status, indent=1)

    # -- subscriptions -------------------------------------------------------------------

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        if not modern and ctx.method in ("resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            job_id = job_id_of(uri)
            if job_id is None:
                raise MCPError(
                    code=INVALID_PARAMS,
                    message=f"only job resources can be subscribed to: {TEMPLATE}, got {uri!r:.80}",
                )
            # One connection's requests share its `initialize` params object: it names the
            # connection, so each client's subscription is its own.
            key = (id(ctx.session.client_params), job_id)
            if ctx.method == "resources/unsubscribe":
                watch = self._watches.pop(key, None)
                if watch is not None:
                    watch.cancel()
                return {}
            session = ctx.session
            self._watch(key, job_id, lambda: session.send_resource_updated(str(uri)))
            return {}
        if modern and ctx.method == "subscriptions/listen":
            wanted = ((params.get("notifications") or {}).get("resourceSubscriptions")) or []
            for uri in wanted if isinstance(wanted, list) else []:
                job_id = job_id_of(uri)
                if job_id is not None:
                    self._watch((0, job_id), job_id, functools.partial(self._publish, str(uri)))
        return await call_next(ctx)

    async def _publish(self, uri: str) -> None:
        await self.bus.publish(ResourceUpdated(uri=uri))

    def _watch(
        self, key: tuple[int, str], job_id: str, notify: Callable[[], Awaitable[None]]
    ) -> None:
        current = self._watches.get(key)
        if current is not None and not current.done():
            return
        if len(self._watches) >= MAX_WATCHES:
            for done in [k for k, t in self._watches.items() if t.done()]:
                self._watches.pop(done, None)
            if len(self._watches) >= MAX_WATCHES:
                raise MCPError(
                    code=INVALID_PARAMS,
                    message=f"at most {MAX_WATCHES} job subscriptions at a time; unsubscribe some",
                )
        task = asyncio.create_task(self._until_finished(job_id, notify))
        self._watches[key] = task
        task.add_done_callback(
            lambda t: self._watches.pop(key, None) if self._watches.get(key) is t else None
        )

    async def _until_finished(self, job_id: str, notify: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_watch_s
        with contextlib.suppress(PromiseError):  # unknown ids, and schedules, never finish here
            first = (await asyncio.to_thread(self.service.probe, [job_id]))[0]
            if first["status"] in SETTLED or first.get("type") == "schedule":
                return
            while loop.time() < deadline:
                promise = await self.service.store.wait(
                    job_id, timeout=min(3600.0, deadline - loop.time())
                )
                if not promise.pending:
                    try:
                        await notify()
                    except Exception as exc:  # the client went away
                        log.info("could not tell a subscriber that %s finished: %r", job_id, exc)
                    return
