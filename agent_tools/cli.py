"""The ``agent-tools`` command.

    agent-tools serve [--http] [--no-worker]   the MCP server (stdio by default)
    agent-tools worker                          a standalone worker
    agent-tools jobs list|show|cancel           look at and manage jobs
    agent-tools approve|reject ID               decide a waiting approval
    agent-tools config claude-desktop|claude-code|cursor [--http]
    agent-tools status                          what the store holds

Every command takes ``--db`` (else ``$AGENT_TOOLS_DB``, else a file in the user's data
directory) and ``--jobs module.path`` (repeatable; or ``$AGENT_TOOLS_JOBS``, comma
separated) to load job kinds. Results go to stdout as JSON; logs and errors to stderr
(stdout belongs to the protocol in stdio mode).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

from agent_tools import builtin_jobs
from agent_tools.config import DB_ENV, resolve_db_url
from agent_tools.jobs import JobError, JobService, iso
from agent_tools.links import Signer
from promises import (
    SEARCH_STATES,
    DurableFunction,
    PromiseError,
    SearchState,
    SqlStore,
    Value,
    open_store,
)
from promises.functions import REGISTRY

JOBS_ENV = "AGENT_TOOLS_JOBS"
TOKEN_ENV = "AGENT_TOOLS_TOKEN"
URL_ENV = "AGENT_TOOLS_URL"
DEFAULT_PORT = 8765
log = logging.getLogger("agent_tools")


def load_kinds(modules: Sequence[str]) -> dict[str, DurableFunction]:
    """The durable functions defined in the built-in module and in ``modules``."""
    names = [
        builtin_jobs.__name__,
        *modules,
        *filter(None, os.environ.get(JOBS_ENV, "").split(",")),
    ]
    if os.getcwd() not in sys.path:  # like `python -m`: job modules of the project you run in
        sys.path.insert(0, os.getcwd())
    kinds: dict[str, DurableFunction] = {}
    for name in dict.fromkeys(n.strip() for n in names):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise SystemExit(f"agent-tools: cannot import job module {name!r}: {exc}") from exc
        kinds.update({k: f for k, f in REGISTRY.items() if f.fn.__module__ == module.__name__})
    return kinds


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


# -- serving ------------------------------------------------------------------------------


async def serve(args: argparse.Namespace, service: JobService, server: Any, signer: Any) -> None:
    import uvicorn

    from agent_tools.http import allowed_hosts, http_app
    from agent_tools.server import worker_running
    from agent_tools.web import WebPages

    async def transport() -> None:
        if not args.http:
            if args.ui_port is None:
                await server.run_stdio_async()
                return
            pages = WebPages(
                service,
                signer,
                token=args.token,
                allowed_hosts=allowed_hosts(args.host, args.ui_port),
            )
            from starlette.applications import Starlette

            ui = uvicorn.Server(
                uvicorn.Config(
                    Starlette(routes=pages.routes()),
                    host=args.host,
                    port=args.ui_port,
                    log_level="warning",
                )
            )
            log.info("web pages on http://%s:%s/", args.host, args.ui_port)
            await asyncio.gather(server.run_stdio_async(), ui.serve())
            return
        pages = WebPages(
            service, signer, token=args.token, allowed_hosts=allowed_hosts(args.host, args.port)
        )
        app = http_app(server, host=args.host, port=args.port, token=args.token, pages=pages)
        log.info("serving MCP on http://%s:%s/mcp and the pages at /", args.host, args.port)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
        await uvicorn.Server(config).serve()

    if args.no_worker:
        await transport()
        return
    async with worker_running(service, concurrency=args.concurrency):
        await transport()


def _config_snippet(target: str, args: argparse.Namespace, db_url: str) -> dict[str, Any]:
    if args.http:
        url = f"http://127.0.0.1:{args.port}/mcp"
        entry: dict[str, Any] = {"url": url}
        if target == "claude-code":
            entry = {"type": "http", "url": url}
        if args.token:
            entry["headers"] = {"Authorization": "Bearer ${AGENT_TOOLS_TOKEN}"}
        if target == "claude-desktop":
            raise SystemExit(
                "agent-tools: Claude Desktop launches servers over stdio; run the config "
                "command without --http (or use a stdio-to-HTTP bridge)"
            )
        return {"mcpServers": {"agent-tools": entry}}
    command = shutil.which("agent-tools") or os.path.join(
        os.path.dirname(sys.executable), "agent-tools"
    )
    server_args = ["serve", "--db", db_url]
    for module in args.jobs:
        server_args += ["--jobs", module]
    # Clients launch servers from a directory of their own: say where the job modules are.
    env = {"PYTHONPATH": os.getcwd()} if args.jobs else {}
    entry = {"command": command, "args": server_args, "env": env}
    if target == "claude-code":
        entry = {"type": "stdio", **entry}
    return {"mcpServers": {"agent-tools": entry}}


def _link_maker(args: argparse.Namespace, signer: Any) -> Any:
    """Approval links point at --public-url, else $AGENT_TOOLS_URL, else where the
    pages are served by default."""
    port = getattr(args, "ui_port", None) or getattr(args, "port", None) or DEFAULT_PORT
    host = getattr(args, "host", "127.0.0.1")
    base = (
        getattr(args, "public_url", None) or os.environ.get(URL_ENV) or f"http://{host}:{port}"
    ).rstrip("/")
    return lambda approval_id: f"{base}/approve/{signer.approval_token(approval_id)}"


# -- the command line ---------------------------------------------------------------------


def _common(suppress: bool) -> argparse.ArgumentParser:
    # Subcommands take the same options; their defaults must not overwrite a value given
    # before the subcommand, so there they default to "absent".
    default: Any = argparse.SUPPRESS if suppress else None
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=default,
        help=f"database path or URL (default: ${DB_ENV}, else a file in the user data dir)",
    )
    common.add_argument(
        "--jobs",
        action="append",
        default=default if suppress else [],
        metavar="MODULE",
        help=f"module with @durable job kinds (repeatable; also ${JOBS_ENV})",
    )
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-tools",
        description="Durable async tools for LLM agents.",
        parents=[_common(False)],
    )
    common = _common(True)
    sub = parser.add_subparsers(dest="command")

    serve_p = sub.add_parser(
        "serve", parents=[common], help="run the MCP server (stdio by default)"
    )
    serve_p.add_argument(
        "--http", action="store_true", help="serve streamable HTTP at /mcp instead of stdio"
    )
    serve_p.add_argument("--host", default="127.0.0.1")
    serve_p.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve_p.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV), help=f"bearer token (or ${TOKEN_ENV})"
    )
    serve_p.add_argument("--no-worker", action="store_true", help="do not run jobs in this process")
    serve_p.add_argument(
        "--ui-port", type=int, default=None, help="in stdio mode, serve the web pages on this port"
    )
    serve_p.add_argument(
        "--public-url", default=None, help=f"base URL of approval links (or ${URL_ENV})"
    )
    serve_p.add_argument("--concurrency", type=int, default=16)

    worker_p = sub.add_parser("worker", parents=[common], help="run a standalone worker")
    worker_p.add_argument("--concurrency", type=int, default=16)

    jobs_p = sub.add_parser("jobs", parents=[common], help="list, show or cancel jobs")
    jobs_sub = jobs_p.add_subparsers(dest="jobs_command", required=True)
    list_p = jobs_sub.add_parser("list", parents=[common])
    list_p.add_argument("--status")
    list_p.add_argument("--kind")
    list_p.add_argument("--limit", type=int, default=20)
    list_p.add_argument("--cursor")
    for name in ("show", "cancel"):
        jobs_sub.add_parser(name, parents=[common]).add_argument("job_id")

    for name in ("approve", "reject"):
        decide = sub.add_parser(
            name, parents=[common], help=f"{name} a waiting approval (its id, or its job's)"
        )
        decide.add_argument("id")
        decide.add_argument("--comment", default=None)

    config_p = sub.add_parser(
        "config", parents=[common], help="print the client config for this install"
    )
    config_p.add_argument("target", choices=["claude-desktop", "claude-code", "cursor"])
    config_p.add_argument("--http", action="store_true")
    config_p.add_argument("--port", type=int, default=DEFAULT_PORT)
    config_p.add_argument("--token", default=os.environ.get(TOKEN_ENV))

    sub.add_parser("status", parents=[common], help="open the store and print what it holds")
    return parser


def decide(service: JobService, target: str, approved: bool, comment: str | None) -> dict[str, Any]:
    """Settle an approval: ``target`` is the approval promise's id or the id of a job
    waiting on one."""
    status = service.probe([target])[0]
    approval_id = status.get("waiting_for", {}).get("approval", target)
    decision = {"approved": approved, "comment": comment}
    try:
        transition = service.store.resolve(
            approval_id, value=Value(json.dumps(decision)), ikey=f"decision:{approval_id}"
        )
    except PromiseError as exc:
        raise JobError(f"cannot decide {approval_id!r}: {exc}") from exc
    if transition.promise.state == "rejected_timedout":
        raise JobError(
            f"{approval_id!r} expired at {iso(transition.promise.timeout_at)} without a decision; "
            "the job went on without it"
        )
    if transition.deduplicated:
        raise JobError(f"{approval_id!r} was already decided; the first decision stands")
    return {"approval": approval_id, **decision}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    command = args.command or "status"
    try:
        if command == "status":
            print(json.dumps(status(args.db), indent=2))
            return 0
        db_url = resolve_db_url(args.db)
        if command == "config":
            print(json.dumps(_config_snippet(args.target, args, db_url), indent=2))
            return 0
        kinds = load_kinds(args.jobs)
        with open_store(db_url) as store:
            if command == "serve":
                from agent_tools.http import UnsafeBind, check_bind
                from agent_tools.server import build_server

                if args.http:
                    try:
                        check_bind(args.host, args.token)
                    except UnsafeBind as exc:
                        print(f"agent-tools: {exc}", file=sys.stderr)
                        return 2

                signer = Signer()
                server = build_server(store, kinds, approval_link=_link_maker(args, signer))
                asyncio.run(serve(args, server.service, server, signer))  # type: ignore[attr-defined]
                return 0
            service = JobService(store, kinds, approval_link=_link_maker(args, Signer()))
            if command == "worker":
                from promises.worker import Worker

                asyncio.run(Worker(service.runtime, concurrency=args.concurrency).run())
                return 0
            result: Any
            if command == "jobs" and args.jobs_command == "list":
                result = service.list_jobs(args.status, args.kind, args.limit, args.cursor)
            elif command == "jobs" and args.jobs_command == "show":
                result = service.probe([args.job_id])[0]
            elif command == "jobs":
                result = service.cancel(args.job_id)
            else:
                result = decide(service, args.id, command == "approve", args.comment)
            print(json.dumps(result, indent=2))
            return 0
    except (JobError, PromiseError) as exc:
        print(f"agent-tools: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
