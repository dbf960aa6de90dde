"""Running the server and the worker as processes.

``serve`` speaks MCP over stdio (a client such as Claude Desktop starts it) or over
streamable HTTP (``--http``). In stdio mode the web pages are served beside it on a
loopback port (8765, or a free one when that is taken; ``--ui-port`` to choose,
``--no-ui`` for none), so every approval link the server hands out opens. The
listening socket is bound before anything else starts: a port that cannot be bound
is an error at once. The server exits when its client closes stdin, taking its pages
and worker with it; SIGTERM and SIGINT stop it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import uvicorn
from sqlalchemy.engine import make_url

from agent_tools.config import DEFAULT_PORT
from agent_tools.http import Listener, bind, check_bind, mcp_app, pages_app
from agent_tools.links import Signer, approval_links, forget_pages, record_pages
from promises import DurableFunction, SqlStore, Worker

if TYPE_CHECKING:
    from agent_tools.proxy import Proxy

log = logging.getLogger("agent_tools.serve")


@dataclass(frozen=True)
class ServeOptions:
    db_url: str
    http: bool = False
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: Pages beside stdio: None = the default port (or a free one), 0 = any free port.
    ui_port: int | None = None
    ui: bool = True
    token: str | None = None
    public_url: str | None = None
    allowed_hosts: tuple[str, ...] = field(default=())
    worker: bool = True
    concurrency: int = 16


def safe_url(url: str) -> str:
    """A database URL fit for a log line (no password)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database url>"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the serve loop owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def open_listener(options: ServeOptions) -> tuple[Listener, socket.socket] | None:
    """Check and bind the listener this run needs (raises ``UnsafeBind`` or
    ``PortUnavailable``); None when it serves no HTTP at all."""
    if options.http:
        listener = Listener(
            options.host, options.port, options.token, options.public_url, options.allowed_hosts
        )
        check_bind(listener.host, listener.token)
        sock = bind(options.host, options.port)
    elif options.ui:
        port = DEFAULT_PORT if options.ui_port is None else options.ui_port
        listener = Listener(
            options.host, port, options.token, options.public_url, options.allowed_hosts
        )
        check_bind(listener.host, listener.token, "serve the pages")
        sock = bind(options.host, port, fallback_to_free=options.ui_port is None)
    else:
        return None
    return replace(listener, port=int(sock.getsockname()[1])), sock


async def serve(
    store: SqlStore,
    kinds: Mapping[str, DurableFunction],
    options: ServeOptions,
    bound: tuple[Listener, socket.socket] | None,
    signer: Signer,
    observer: Any = None,
    proxy: Proxy | None = None,
) -> None:
    """Serve until the client leaves or a signal comes (``observer``: telemetry). With
    ``proxy``, serve an upstream server's tools as durable jobs (``agent_tools.proxy``):
    the upstream is started (or reached) first, and kept up while serving."""
    from agent_tools.server import build_server

    base = bound[0].url if bound else options.public_url
    links = approval_links(signer, base)
    traced = observer is not None
    if proxy is None:
        server = build_server(store, kinds, approval_link=links, trace_messages=traced)
        await _serve(store, server, options, bound, signer, observer)
        return
    from agent_tools.proxy import build_proxy_server

    async with proxy.upstream.running():
        server = build_proxy_server(store, proxy, approval_link=links, trace_messages=traced)
        await _serve(store, server, options, bound, signer, observer)


async def _serve(
    store: SqlStore,
    server: Any,
    options: ServeOptions,
    bound: tuple[Listener, socket.socket] | None,
    signer: Signer,
    observer: Any,
) -> None:
    from agent_tools.server import worker_running
    from agent_tools.web import WebPages

    base = bound[0].url if bound else options.public_url
    service = server.service
    if observer is not None:
        from agent_tools.telemetry import attach

        attach(service.runtime, observer)
    app = None
    if bound is not None:
        listener = bound[0]
        pages = WebPages(service, signer, token=listener.token)
        app = mcp_app(server, listener, pages) if options.http else pages_app(pages, listener)
    settle_heap()
    # The signals are ours from here on, before the start line that says the server is
    # up: a SIGTERM from then on (the worker still starting, say) stops it cleanly.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    record = record_pages(options.db_url, base) if bound and base else None
    log.info(
        "agent-tools serving MCP over %s; database %s; job kinds: %s; %s; pages: %s",
        f"HTTP at {bound[0].local_url}/mcp" if options.http and bound else "stdio",
        safe_url(options.db_url),
        ", ".join(service.kinds) or "none",
        f"a worker runs here (concurrency {options.concurrency})"
        if options.worker
        else "no worker here (run `agent-tools worker` beside it)",
        f"{bound[0].url}/" if bound else "not served (--no-ui)",
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            if options.worker:
                await stack.enter_async_context(
                    worker_running(service, concurrency=options.concurrency)
                )
            stdin_released = await _serve_until_done(server, app, bound, options.http, stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if record is not None:
            forget_pages(record)
    if not stdin_released:
        # A thread blocked reading stdin cannot be interrupted, and the event loop
        # would wait for it on the way out. The worker has handed its jobs back and
        # every write is committed: leave now.
        store.close()
        exit_now(0)


async def _serve_until_done(
    server: Any,
    app: Any,
    bound: tuple[Listener, socket.socket] | None,
    http: bool,
    stop: asyncio.Event,
) -> bool:
    tasks: dict[str, asyncio.Task[Any]] = {}
    web = None
    if app is not None and bound is not None:
        # log_config=None: uvicorn's records go through our handler (text or JSON).
        config = uvicorn.Config(app, log_level="warning", log_config=None,
                                timeout_graceful_shutdown=3)  # fmt: skip
        web = _Server(config)
        tasks["web"] = asyncio.create_task(web.serve(sockets=[bound[1]]), name="web pages")
    if not http:
        tasks["stdio"] = asyncio.create_task(server.run_stdio_async(), name="mcp stdio")
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {stopper, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED
        )
        if tasks.get("stdio") in done:
            log.info("the client closed stdin; stopping")
        elif stopper in done:
            log.info("stopping on a signal")
        for name, task in tasks.items():
            if task in done and not task.cancelled() and task.exception() is not None:
                log.error("the %s stopped: %s", name, task.exception())
    finally:
        stopper.cancel()
        if web is not None:
            web.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(tasks["web"], 5)
    stdio = tasks.get("stdio")
    if stdio is not None and not stdio.done():
        # Blocked reading stdin in a thread that cannot be interrupted: give it a
        # moment, then tell the caller to leave without waiting for it.
        stdio.cancel()
        finished, _ = await asyncio.wait({stdio}, timeout=2)
        if not finished:
            return False
    return True


def settle_heap() -> None:
    """Once everything is loaded: move the objects made so far (modules, schemas, the
    server) out of the garbage collector's sight. They live as long as the process, and
    each full collection walked all of them while the event loop stood still: 50 ms
    pauses that were the p99 of ``start_job`` (63 ms with 8 calls in flight, 14 ms
    since; ``bench/mcp.py``)."""
    gc.collect()
    gc.freeze()


def exit_now(code: int = 0) -> None:
    """Leave at once, without waiting for threads."""
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


async def run_worker(store: SqlStore, kinds: Mapping[str, DurableFunction], db_url: str,
                     concurrency: int, observer: Any = None) -> None:  # fmt: skip
    from promises import Runtime

    runtime = Runtime(store, registry=kinds)
    if observer is not None:
        from agent_tools.telemetry import attach

        attach(runtime, observer)
    worker = Worker(runtime, concurrency=concurrency)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    settle_heap()
    log.info(
        "agent-tools worker on database %s; job kinds: %s; concurrency %s",
        safe_url(db_url), ", ".join(sorted(kinds)) or "none", concurrency,
    )  # fmt: skip
    await worker.run()
    log.info("worker stopped")
