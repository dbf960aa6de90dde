"""The ``agent-tools`` command: run the server, and look after jobs as an operator.

    agent-tools serve [--http] [--ui-port N]   the MCP server (stdio by default) and its pages
    agent-tools worker                          a standalone worker
    agent-tools jobs list|show|watch|cancel|rerun
    agent-tools approvals                       what waits for a person
    agent-tools approve|reject ID               decide a waiting approval
    agent-tools schedules list|pause|resume|cancel
    agent-tools health                          jobs per status and kind, workers
    agent-tools status                          what the store holds
    agent-tools config claude-desktop|claude-code|cursor

Output is for people (tables) unless ``--json``. Results go to stdout; logs and errors
to stderr (stdout belongs to the protocol in stdio mode). Exit status: 0 done,
1 the thing asked for failed or does not exist, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from agent_tools import builtin_jobs, operate
from agent_tools.config import (
    CLIENTS,
    DB_ENV,
    DEFAULT_PORT,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    ConfigError,
    client_config,
    prepare_store_file,
    require_existing_store,
    resolve_db_url,
    resolve_token,
)
from agent_tools.jobs import JobError, JobService
from agent_tools.links import URL_ENV, Signer, approval_links, pages_base
from agent_tools.logs import LOG_FORMATS, setup_logging
from agent_tools.present import STATUSES
from promises import (
    SEARCH_STATES,
    DurableFunction,
    PromiseError,
    SearchState,
    SqlStore,
    open_store,
    open_store_waiting,
)
from promises.functions import REGISTRY

JOBS_ENV = "AGENT_TOOLS_JOBS"
log = logging.getLogger("agent_tools")

# Kept for callers of the earlier API.
decide = operate.decide


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
            raise ConfigError(
                f"cannot import job module {name!r}: {exc}. Run from the directory that "
                "holds it, or set PYTHONPATH"
            ) from exc
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


def _duration_ms(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use a number and a unit: 90s, 30m, 2h or 7d"
        )
    unit = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[match[2]]
    return int(float(match[1]) * unit)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; use a number from 1 to 65535")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number of at least 1")
    return int(text)


CPU_HELP = (
    "run this process on CPU N only (Linux). Its threads take turns on one GIL; handing "
    "it from one CPU to another can cost more than a second CPU gives (README: Speed)"
)


def _cpu(text: str) -> int:
    """A CPU this process may run on, for ``--cpu``."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if allowed is None:
        raise argparse.ArgumentTypeError("--cpu needs Linux (it sets the CPU affinity)")
    if not text.isdigit() or int(text) not in allowed:
        listed = ", ".join(map(str, allowed))
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a CPU this process may run on; choose one of {listed}"
        )
    return int(text)


def _pin(args: argparse.Namespace) -> None:
    """Keep this process on ``--cpu``, set before any thread starts (new threads
    inherit the calling thread's affinity)."""
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})


# -- the parser ---------------------------------------------------------------------------


def _common(suppress: bool) -> argparse.ArgumentParser:
    # Subcommands take the same options; their defaults must not overwrite a value given
    # before the subcommand, so there they default to "absent".
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=default(None), metavar="PATH|URL",
                        help=f"database file or URL (default: ${DB_ENV}, else agent-tools.db "
                             "in your data directory)")  # fmt: skip
    common.add_argument("--jobs", action="append", default=default([]), metavar="MODULE",
                        help=f"module with @durable job kinds to load (repeatable; also "
                             f"${JOBS_ENV}, comma separated)")  # fmt: skip
    common.add_argument("--json", action="store_true", default=default(False),
                        help="print JSON for scripts instead of tables")  # fmt: skip
    common.add_argument("--log-format", choices=LOG_FORMATS, default=default("text"),
                        help="logs on stderr: text (default) or JSON lines")  # fmt: skip
    return common


def _public_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--public-url", default=None, metavar="URL",
                        help=f"base URL of the pages for links (default: ${URL_ENV}, else "
                             "the pages of a server running on this database)")  # fmt: skip


def _serving_options(parser: argparse.ArgumentParser) -> None:
    """The options of everything that serves MCP (``serve`` and ``proxy``)."""
    parser.add_argument(
        "--http",
        action="store_true",
        help="serve streamable HTTP at /mcp (with the pages at /) instead of stdio",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other needs a token)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"HTTP port with --http (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--ui-port",
        type=_port,
        default=None,
        metavar="PORT",
        help=f"in stdio mode, the port of the pages (default {DEFAULT_PORT}, or a "
        "free port when that is taken; 0 for any free port)",
    )
    parser.add_argument("--no-ui", action="store_true", help="in stdio mode, serve no pages")
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help=f"file holding the bearer token (or ${TOKEN_FILE_ENV}); required "
        "to listen beyond loopback",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"the bearer token itself (or ${TOKEN_ENV}); prefer --token-file: "
        "command lines are visible to other users",
    )
    _public_url(parser)
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="another host name people use to reach this server, e.g. behind a proxy (repeatable)",
    )
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="run no jobs in this process (run agent-tools worker beside it)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive,
        default=16,
        help="jobs run at once by this process's worker (default 16)",
    )
    parser.add_argument("--cpu", type=_cpu, metavar="N", help=CPU_HELP)
    parser.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry traces and metrics over OTLP (needs agent-tools[otel]; "
        "set OTEL_EXPORTER_OTLP_ENDPOINT)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-tools",
        description="Durable, asynchronous tools for LLM agents: an MCP server on durable "
        "promises, its web pages, and commands to look after its jobs.",
        epilog="Run 'agent-tools COMMAND --help' for a command's options.",
        parents=[_common(False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = _common(True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help, description=help, **kwargs)

    serve = command(
        "serve", "run the MCP server (stdio by default) with its web pages and a worker"
    )
    _serving_options(serve)

    proxy = command(
        "proxy",
        "serve the tools of another MCP server as durable jobs: a slow call answers with a "
        "job id instead of timing out (agent-tools proxy [options] -- COMMAND [ARGS...])",
    )
    _serving_options(proxy)
    proxy.add_argument(
        "--upstream-url",
        default=None,
        metavar="URL",
        help="wrap a server reached over streamable HTTP instead of a command",
    )
    proxy.add_argument(
        "--upstream-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header for --upstream-url (repeatable; $VAR in the value is read "
        "from the environment)",
    )
    proxy.add_argument(
        "--inline-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait this long for a call to answer inline before handing back a "
        "job id (0 to 50; default 45, below the clients' cut of about 60 s)",
    )
    proxy.add_argument(
        "--policy",
        default=None,
        metavar="FILE",
        help="per-tool policy, TOML: retry, background, inline_wait_s, concurrency",
    )
    proxy.add_argument(
        "--name",
        default=None,
        help="the job kind's name for this upstream (default: from its command or URL)",
    )
    # Proxied calls mostly wait on the upstream: more of them in flight than jobs.
    proxy.set_defaults(upstream_command=[], concurrency=64)

    worker = command("worker", "run a standalone worker for the loaded job kinds")
    worker.add_argument(
        "--concurrency", type=_positive, default=16, help="jobs run at once (default 16)"
    )
    worker.add_argument("--cpu", type=_cpu, metavar="N", help=CPU_HELP)
    worker.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry traces and metrics over OTLP (needs agent-tools[otel]; "
        "set OTEL_EXPORTER_OTLP_ENDPOINT)",
    )

    jobs = command("jobs", "list, show, follow, cancel or re-run jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        return jobs_sub.add_parser(name, parents=[common], help=help, description=help)

    listing = action("list", "jobs, newest first")
    listing.add_argument("--status", choices=STATUSES, help="only jobs with this status")
    listing.add_argument("--kind", help="only jobs of this kind")
    listing.add_argument("--limit", type=operate.whole(1, 200), default=20,
                         help="jobs per page, 1 to 200 (default 20)")  # fmt: skip
    listing.add_argument("--cursor", help="the next page, as printed under the previous one")
    _public_url(listing)
    show = action("show", "one job: status, call, what it waits for, result or error")
    show.add_argument("job_id", metavar="JOB_ID", type=operate.an_id,
                      help="the job (or timer) to show, as jobs list prints it")  # fmt: skip
    _public_url(show)
    watch = action("watch", "follow a job live until it finishes (exit 0 if it completed)")
    watch.add_argument("job_id", metavar="JOB_ID", type=operate.an_id, help="the job to follow")
    watch.add_argument("--interval", type=operate.seconds(0.1, 3600), default=1.0,
                       help="seconds between checks, 0.1 to 3600 (default 1)")  # fmt: skip
    _public_url(watch)
    cancel = action("cancel", "cancel jobs by id, or every unfinished job matching a filter")
    cancel.add_argument("job_ids", nargs="*", metavar="JOB_ID", type=operate.an_id,
                        help="the jobs to cancel (or give a filter instead)")  # fmt: skip
    cancel.add_argument(
        "--status", choices=("running", "waiting"), help="filter: unfinished jobs with this status"
    )
    cancel.add_argument("--kind", help="filter: jobs of this kind")
    cancel.add_argument(
        "--older-than",
        type=_duration_ms,
        metavar="AGE",
        help="filter: started longer ago than this (90s, 30m, 2h, 7d)",
    )
    cancel.add_argument(
        "--yes",
        action="store_true",
        help="with a filter: really cancel (without it, only list the matches)",
    )
    rerun = action("rerun", "start a finished job again with the same arguments, under a new id")
    rerun.add_argument("job_id", metavar="JOB_ID", type=operate.an_id,
                       help="the finished job to run again")  # fmt: skip
    rerun.add_argument(
        "--id", dest="new_id", default=None, help="the new job's id (default: JOB_ID-rerun-N)"
    )

    approvals = command("approvals", "what waits for a person, with links to decide")
    _public_url(approvals)
    for name, verb in (("approve", "approve"), ("reject", "reject")):
        decide_p = command(
            name, f"{verb} what a job asks a person (the approval's id or its job's)"
        )
        decide_p.add_argument(
            "id", metavar="ID", type=operate.an_id,
            help="the approval id, or the id of the job waiting on it",
        )  # fmt: skip
        decide_p.add_argument("--comment", default=None, type=operate.text_of(2000),
                              help="why, for the record (up to 2000 characters)")  # fmt: skip
        decide_p.add_argument("--by", default=None, type=operate.text_of(200),
                              help="who decides (default: your user name)")  # fmt: skip

    schedules = command("schedules", "list, pause, resume or cancel cron schedules")
    schedules_sub = schedules.add_subparsers(dest="schedules_command", metavar="ACTION",
                                             required=True)  # fmt: skip
    listed = schedules_sub.add_parser("list", parents=[common], help="the schedules, by id",
                                      description="the schedules, by id")  # fmt: skip
    listed.add_argument("--state", choices=("active", "paused", "cancelled"),
                        help="only schedules in this state")  # fmt: skip
    listed.add_argument("--limit", type=operate.whole(1, 1000), default=50,
                        help="schedules per page, 1 to 1000 (default 50)")  # fmt: skip
    listed.add_argument("--cursor", help="the next page, as printed under the previous one")
    for name, what in (("pause", "stop firing until resumed"),
                       ("resume", "fire again, from the next tick on"),
                       ("cancel", "stop for good")):  # fmt: skip
        change = schedules_sub.add_parser(name, parents=[common], help=what, description=what)
        change.add_argument("schedule_id", metavar="SCHEDULE_ID", type=operate.an_id,
                            help="the schedule, as schedules list prints it")  # fmt: skip

    command("health", "jobs per status and kind, the oldest waiting job, workers")
    command("status", "what the store holds (promises per state)")

    config = command("config", "print the MCP client config for this install")
    config.add_argument("target", choices=CLIENTS, help="the client to configure")
    config.add_argument(
        "--http",
        action="store_true",
        help="reach a running HTTP server instead of launching one over stdio",
    )
    config.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"with --http, the server's port (default {DEFAULT_PORT})",
    )
    config.add_argument(
        "--ui-port",
        type=_port,
        default=None,
        metavar="PORT",
        help=f"the pages' port for the launched server (default: {DEFAULT_PORT}, or a free one)",
    )
    config.add_argument(
        "--token", action="store_true", help=f"with --http, send the token from ${TOKEN_ENV}"
    )
    config.add_argument(
        "--proxy",
        action="store_true",
        help="wrap an existing MCP server, given after '--' (or --upstream-url), in the "
        "durable proxy: agent-tools config claude-desktop --proxy -- npx -y some-server",
    )
    config.add_argument(
        "--upstream-url", default=None, metavar="URL",
        help="with --proxy, wrap a server reached over streamable HTTP",
    )  # fmt: skip
    config.add_argument(
        "--upstream-header", action="append", default=[], metavar="'NAME: VALUE'",
        help="with --upstream-url, a header (repeatable; write $VAR for a secret and give "
        "it with --env)",
    )  # fmt: skip
    config.add_argument(
        "--policy", default=None, metavar="FILE", help="with --proxy, the per-tool policy file"
    )
    config.add_argument(
        "--inline-wait", type=float, default=None, metavar="SECONDS",
        help="with --proxy, how long a call may answer inline (0 to 50; default 45)",
    )  # fmt: skip
    config.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE",
        help="with --proxy, an environment variable for the wrapped server, such as its "
        "API key (repeatable)",
    )  # fmt: skip
    return parser  # fmt: skip


def _version() -> str:
    try:
        return version("agent-tools")
    except PackageNotFoundError:
        return "unknown"


# -- commands -----------------------------------------------------------------------------


def _print(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else text())


def _service(args: argparse.Namespace, store: SqlStore) -> JobService:
    base = pages_base(resolve_db_url(args.db), getattr(args, "public_url", None))
    return JobService(store, load_kinds(args.jobs), approval_link=approval_links(Signer(), base))


def _serve(args: argparse.Namespace, proxy: Any = None) -> int:
    from agent_tools.serving import ServeOptions, open_listener, serve

    _pin(args)
    db_url = resolve_db_url(args.db)
    token = resolve_token(args.token, args.token_file)
    options = ServeOptions(
        db_url=db_url, http=args.http, host=args.host, port=args.port, ui_port=args.ui_port,
        ui=not args.no_ui, token=token, public_url=args.public_url,
        allowed_hosts=tuple(args.allowed_host), worker=not args.no_worker,
        concurrency=args.concurrency,
    )  # fmt: skip
    kinds = load_kinds(args.jobs) if proxy is None else proxy.kinds
    bound = open_listener(options)  # before anything starts: a taken port fails here
    prepare_store_file(db_url)
    with _open(db_url) as store, _telemetry(args) as observer:
        asyncio.run(serve(store, kinds, options, bound, Signer(), observer, proxy))
    return 0


def _proxy(args: argparse.Namespace) -> int:
    from agent_tools.proxy import Proxy, UpstreamSpec, load_policy, parse_header

    if args.jobs:
        raise ConfigError("the proxy serves its upstream's tools; --jobs is for agent-tools serve")
    if args.no_worker:
        raise ConfigError(
            "the proxy runs its calls itself (the upstream lives in its process); "
            "leave out --no-worker"
        )
    if not args.upstream_command and args.upstream_url is None:
        raise ConfigError(
            "say which server to wrap: agent-tools proxy [options] -- COMMAND [ARGS...] "
            "(a server over stdio), or --upstream-url URL (over streamable HTTP)"
        )
    if args.upstream_header and args.upstream_url is None:
        raise ConfigError("--upstream-header goes with --upstream-url")
    spec = UpstreamSpec(
        command=tuple(args.upstream_command), url=args.upstream_url,
        headers=dict(parse_header(h) for h in args.upstream_header),
    )  # fmt: skip
    proxy = Proxy(spec, load_policy(args.policy, args.inline_wait), name=args.name)
    return _serve(args, proxy)


def _worker(args: argparse.Namespace) -> int:
    from agent_tools.serving import run_worker

    _pin(args)
    db_url = resolve_db_url(args.db)
    kinds = load_kinds(args.jobs)
    prepare_store_file(db_url)
    try:  # a worker started before its database waits for it; a bad URL is an error
        store = open_store_waiting(db_url)
    except PromiseError as exc:
        raise ConfigError(str(exc)) from exc
    with store, _telemetry(args) as observer:
        asyncio.run(run_worker(store, kinds, db_url, args.concurrency, observer))
    return 0


@contextlib.contextmanager
def _telemetry(args: argparse.Namespace) -> Iterator[Any]:
    """An OpenTelemetry observer with ``--otel``, else None."""
    if not args.otel:
        yield None
        return
    from agent_tools.telemetry import OtelObserver, exporting

    with exporting() as (tracer_provider, meter_provider):
        yield OtelObserver(tracer_provider, meter_provider)


def _open(url: str) -> SqlStore:
    try:
        return open_store(url)
    except PromiseError as exc:  # a bad URL, an unreachable server
        raise ConfigError(str(exc)) from exc


def _read(args: argparse.Namespace, run: Callable[[JobService], int]) -> int:
    url = resolve_db_url(args.db)
    require_existing_store(url)
    with _open(url) as store:
        return run(_service(args, store))


def _jobs(args: argparse.Namespace) -> int:
    def run(service: JobService) -> int:
        now = service.store.clock()
        sub = args.jobs_command
        if sub == "list":
            page = operate.list_jobs(service, args.status, args.kind, args.limit, args.cursor)
            _print(args, page,
                   lambda: operate.render_list(page, now, args.status, args.kind))  # fmt: skip
        elif sub == "show":
            job = operate.show_job(service, args.job_id)
            _print(args, job, lambda: operate.render_job(job, now))
        elif sub == "watch":

            def emit(job: dict[str, Any]) -> None:
                line = (
                    json.dumps(job)
                    if args.json
                    else operate.render_watch_line(job, service.store.clock())
                )
                print(line, flush=True)

            last = asyncio.run(operate.watch(service, args.job_id, emit, args.interval))
            return 0 if last["status"] == "completed" else 1
        elif sub == "cancel":
            result = operate.cancel(
                service, args.job_ids, args.status, args.kind, args.older_than, args.yes
            )
            _print(args, result, lambda: operate.render_cancel(result))
            return 1 if result["errors"] else 0
        else:
            job = operate.rerun(service, args.job_id, args.new_id)
            _print(args, job, lambda: f"started {job['job_id']} (a re-run of {args.job_id})")
        return 0

    return _read(args, run)  # fmt: skip


def _approvals(args: argparse.Namespace) -> int:
    def run(service: JobService) -> int:
        data = operate.waiting_approvals(service)
        _print(args, data, lambda: operate.render_approvals(data, service.store.clock()))
        return 0

    return _read(args, run)


def _decide(args: argparse.Namespace) -> int:
    import getpass

    def run(service: JobService) -> int:
        by = args.by or getpass.getuser()
        result = operate.decide(service, args.id, args.command == "approve", args.comment, by)
        verb = "approved" if result["approved"] else "rejected"
        _print(
            args,
            result,
            lambda: (
                f"{verb} {result['approval']}"
                + (f" (job {result['job_id']} goes on)" if result.get("job_id") else "")
            ),
        )
        return 0

    return _read(args, run)  # fmt: skip


def _schedules(args: argparse.Namespace) -> int:
    def run(service: JobService) -> int:
        now = service.store.clock()
        if args.schedules_command == "list":
            data = operate.list_schedules(service, args.state, args.limit, args.cursor)
            _print(args, data, lambda: operate.render_schedules(data, now))
            return 0
        changed = operate.set_schedule(service, args.schedule_id, args.schedules_command)
        _print(args, changed, lambda: operate.render_schedule(changed, service.store.clock()))
        return 0

    return _read(args, run)


def _health(args: argparse.Namespace) -> int:
    def run(service: JobService) -> int:
        data = operate.health(service)
        _print(args, data, lambda: operate.render_health(data, service.store.clock()))
        return 0

    return _read(args, run)


def _status(args: argparse.Namespace) -> int:
    url = resolve_db_url(args.db)
    require_existing_store(url)
    with _open(url) as store:
        counts = {state: _count(store, state) for state in SEARCH_STATES}
    data = {"db": url, "promises": counts}
    _print(args, data, lambda: f"database {url}\n" + "\n".join(
        f"  {state:<9} {count}" for state, count in counts.items()))  # fmt: skip
    return 0


def _config(args: argparse.Namespace) -> int:
    from agent_tools.config import ProxyOptions
    from agent_tools.proxy import load_policy

    wraps = bool(args.upstream_command) or args.upstream_url is not None
    if args.proxy != wraps:
        raise ConfigError(
            "--proxy wraps the server given after '--' (or by --upstream-url): "
            f"agent-tools config {args.target} --proxy -- npx -y some-server"
        )
    proxy_only = {"--upstream-header": args.upstream_header, "--policy": args.policy,
                  "--inline-wait": args.inline_wait, "--env": args.env}  # fmt: skip
    given = [name for name, value in proxy_only.items() if value not in (None, [])]
    if given and not args.proxy:
        raise ConfigError(f"{given[0]} is for a proxy's config: add --proxy")
    if args.upstream_command and args.upstream_url is not None:
        raise ConfigError("give the server either after '--' or with --upstream-url, not both")
    options = ProxyOptions(url=args.upstream_url, headers=tuple(args.upstream_header),
                           policy=args.policy, inline_wait=args.inline_wait,
                           env=tuple(args.env))  # fmt: skip
    if args.policy is not None or args.inline_wait is not None:
        # The proxy's own checks, now: a config that starts a proxy doomed to fail is no help.
        load_policy(args.policy, args.inline_wait)
    snippet = client_config(
        args.target, db_url=resolve_db_url(args.db), jobs=args.jobs, http=args.http,
        port=args.port, token=args.token, ui_port=args.ui_port,
        upstream=args.upstream_command, proxy=options,
    )  # fmt: skip
    print(json.dumps(snippet, indent=2))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": _serve, "proxy": _proxy, "worker": _worker, "jobs": _jobs, "approvals": _approvals,
    "approve": _decide, "reject": _decide, "schedules": _schedules, "health": _health,
    "status": _status,
    "config": _config,
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    from agent_tools.http import PortUnavailable, UnsafeBind

    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" is the upstream server's command (proxy, config --proxy).
    upstream: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, upstream = argv[:at], argv[at + 1 :]
    args = parser.parse_args(argv)
    if upstream and args.command not in ("proxy", "config"):
        parser.error(f"unexpected arguments after '--': {' '.join(upstream)}")
    args.upstream_command = upstream
    if args.command is None:
        parser.print_help()
        return 0
    setup_logging(args.log_format)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, UnsafeBind, PortUnavailable) as exc:
        print(f"agent-tools: {exc.args[-1] if isinstance(exc, OSError) else exc}", file=sys.stderr)
        return 2
    except operate.NotFound as exc:
        print(f"agent-tools: {exc}", file=sys.stderr)
        return 1
    except (JobError, PromiseError) as exc:
        print(f"agent-tools: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
