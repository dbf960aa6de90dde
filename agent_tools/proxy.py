"""``agent-tools proxy``: durable tools for an MCP server people already have.

Claude Desktop (and claude.ai, Cursor) cut a tool call after about a minute, and
progress does not reset that. The proxy sits between such a client and an existing
server — one it starts over stdio (``-- COMMAND ARGS``) or one it reaches over
streamable HTTP (``--upstream-url``) — and serves the upstream's tools under their own
names, descriptions and input schemas, beside ``probe_status``, ``await_result``,
``list_jobs`` and ``cancel_job``:

* a call to an upstream tool becomes a durable job (kind ``proxy:<upstream>``) whose
  one step is the upstream call. The proxy waits up to the tool's inline wait
  (``--inline-wait``, default 45 s): an answer in time is returned exactly as the
  upstream gave it (content, structured content, ``isError``); otherwise the call
  answers with the job id and how to rejoin it (``await_result``), and with a task
  handle to clients that negotiated tasks. The upstream call goes on meanwhile;
* a job's result is the upstream's answer as it gave it, ``isError`` included: the
  job *completed* when the upstream answered, and *failed* only when no answer came
  (the upstream died mid-call, refused the call, or could not be reached);
* killed mid-call, the proxy re-issues the call when it is back (steps run at least
  once); the job id goes along in ``_meta["agent-tools/idempotency-key"]`` so an
  upstream may deduplicate;
* the upstream process is supervised: restarted when it dies (its stderr goes to the
  proxy's log, a line each). A call in flight when it died fails, or is retried where
  the policy allows;
* ``cancel_job`` on a call in flight cancels it upstream (``notifications/cancelled``);
  upstream progress notifications become the job's progress;
* the upstream's tool list is kept current (``notifications/tools/list_changed`` is
  passed on to this server's clients).

Per-tool policy (``--policy FILE``, TOML) — whether a failed call is retried (default
never: upstream tools may not be idempotent), whether a tool always goes to the
background, its inline wait, how many of its calls run at once, and how long one call
may take before it is cancelled upstream (default: no limit)::

    [defaults]
    inline_wait_s = 45

    [tools.generate_report]
    background = true
    retry = true
    max_attempts = 5
    concurrency = 2
    timeout_s = 600

Upstream tools are listed without their output schema: a call that goes to the
background answers with a job id, which no upstream output schema describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import threading
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context as ToolContext
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import ToolsListChanged
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    CallToolResult,
    Implementation,
    RequestParamsMeta,
    TextContent,
    Tool,
    ToolListChangedNotification,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agent_tools.config import ConfigError
from agent_tools.jobs import PROXY_KIND_PREFIX, SETTLED, JobService
from agent_tools.task_handles import JOB_META, TASK_REQUESTED
from promises import (
    Context,
    DurableFunction,
    Exponential,
    Never,
    NonRetryableError,
    RetryPolicy,
    SqlStore,
    current_step,
)

log = logging.getLogger("agent_tools.proxy")
upstream_log = logging.getLogger("agent_tools.upstream")

#: The ``_meta`` key carrying the job id to the upstream, for it to deduplicate on.
IDEMPOTENCY_KEY = "agent-tools/idempotency-key"
DEFAULT_INLINE_WAIT_S = 45.0
#: Upstream progress is written at most this often (the latest wins).
PROGRESS_EVERY_S = 0.5
#: As long as ``await_result`` waits: below the clients' cut of about 60 s.
MAX_INLINE_WAIT_S = 50.0
#: This server's own tools, served beside the upstream's.
OWN_TOOLS = ("probe_status", "await_result", "list_jobs", "cancel_job")


# -- policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolPolicy:
    retry: bool = False
    max_attempts: int = 3
    background: bool = False
    inline_wait_s: float = DEFAULT_INLINE_WAIT_S
    concurrency: int | None = None
    #: How long one call may take before it is cancelled upstream (None: no limit).
    timeout_s: float | None = None

    @property
    def wait_s(self) -> float:
        return 0.0 if self.background else self.inline_wait_s

    def retry_policy(self) -> RetryPolicy:
        return Exponential(max_attempts=self.max_attempts) if self.retry else Never()


@dataclass(frozen=True)
class Policy:
    defaults: ToolPolicy = field(default_factory=ToolPolicy)
    tools: Mapping[str, ToolPolicy] = field(default_factory=dict)

    def of(self, tool: str) -> ToolPolicy:
        return self.tools.get(tool, self.defaults)


_KEYS: dict[str, str] = {
    "retry": "true or false",
    "max_attempts": "a whole number from 1 to 100",
    "background": "true or false",
    "inline_wait_s": f"seconds from 0 to {MAX_INLINE_WAIT_S:g}",
    "concurrency": "a whole number of at least 1",
    "timeout_s": "seconds, more than 0",
}


def _tool_policy(where: str, table: object, base: ToolPolicy) -> ToolPolicy:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of settings ({', '.join(_KEYS)})")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _KEYS:
            raise ConfigError(
                f"{where} has an unknown setting {key!r}; the settings are {', '.join(_KEYS)}"
            )
        ok = {
            "retry": isinstance(value, bool),
            "background": isinstance(value, bool),
            "max_attempts": isinstance(value, int) and not isinstance(value, bool)
            and 1 <= value <= 100,
            "inline_wait_s": isinstance(value, int | float) and not isinstance(value, bool)
            and 0 <= value <= MAX_INLINE_WAIT_S,
            "concurrency": isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            "timeout_s": isinstance(value, int | float) and not isinstance(value, bool)
            and 0 < value < float("inf"),
        }[key]  # fmt: skip
        if not ok:
            raise ConfigError(f"{where}: {key} must be {_KEYS[key]}, got {value!r}")
        values[key] = float(value) if key in ("inline_wait_s", "timeout_s") else value
    return replace(base, **values)


def load_policy(path: str | None, inline_wait_s: float | None = None) -> Policy:
    """The policy from a TOML file (or the defaults); ``inline_wait_s`` (the command
    line's ``--inline-wait``) overrides the file's default inline wait."""
    if inline_wait_s is not None and not 0 <= inline_wait_s <= MAX_INLINE_WAIT_S:
        raise ConfigError(
            f"--inline-wait must be seconds from 0 to {MAX_INLINE_WAIT_S:g} (below the "
            f"clients' cut of about 60 s), got {inline_wait_s:g}"
        )
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).expanduser().read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the policy file {path!r}: {exc.strerror}") from exc
        except UnicodeDecodeError:
            raise ConfigError(f"the policy file {path!r} is not UTF-8 text (TOML)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the policy file {path!r} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"defaults", "tools"}
    if unknown:
        raise ConfigError(
            f"the policy file {path!r} has an unknown section {sorted(unknown)[0]!r}; the "
            "sections are [defaults] and [tools.<tool name>]"
        )
    defaults = _tool_policy("[defaults]", data.get("defaults", {}), ToolPolicy())
    if inline_wait_s is not None:
        defaults = replace(defaults, inline_wait_s=float(inline_wait_s))
    tools = data.get("tools", {})
    if not isinstance(tools, dict):
        raise ConfigError("[tools] must hold one table per tool: [tools.<tool name>]")
    per_tool = {
        name: _tool_policy(f"[tools.{name}]", table, defaults) for name, table in tools.items()
    }
    return Policy(defaults, per_tool)


# -- the upstream ----------------------------------------------------------------------


class UpstreamUnavailable(ConfigError):
    """The upstream server is not running or cannot be reached (at start: it does not
    start, so the proxy stops with this; later: a call fails with it)."""


class UpstreamLost(Exception):
    """The upstream went away during a call: it exited or the connection broke."""


class UpstreamRefused(NonRetryableError):
    """The upstream answered the call with a protocol error (unknown tool, bad params)."""


class UpstreamFailed(Exception):
    """The upstream answered with an error of its own (not a refusal): retryable."""


class _SessionGone(Exception):
    """The upstream no longer knows the HTTP session: the call was never made."""


#: JSON-RPC errors that say the call itself is wrong: retrying cannot help.
_REFUSALS = frozenset({-32600, -32601, -32602})


class UpstreamTimedOut(Exception):
    """The call took longer than its policy's ``timeout_s`` (retryable per policy)."""


class UpstreamToolError(Exception):
    """The upstream answered with ``isError``; raised only to retry (policy ``retry``)."""


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'``; ``$VAR`` and ``${VAR}`` in the value come from the environment,
    so a secret need not sit in a client's config file; ``$$`` is a literal ``$``."""
    name, sep, value = text.partition(":")
    if (
        not sep
        or not name.strip()
        or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name.strip())
    ):
        raise ConfigError(f"--upstream-header must look like 'Name: value', got {text!r}")

    def expand(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        variable = match[1] or match[2]
        if variable not in os.environ:
            raise ConfigError(
                f"--upstream-header {name.strip()!r} uses ${variable}, which is not set in "
                "the environment (write $$ for a literal $)"
            )
        return os.environ[variable]

    pattern = r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)"
    return name.strip(), re.sub(pattern, expand, value.strip())


@dataclass(frozen=True)
class UpstreamSpec:
    """Where the upstream is: a command to start (stdio) or a streamable HTTP URL."""

    command: tuple[str, ...] = ()
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None

    def __post_init__(self) -> None:
        if bool(self.command) == bool(self.url):
            raise ConfigError(
                "give the upstream server either as a command after '--' "
                "(agent-tools proxy -- npx -y some-server) or with --upstream-url URL, not both"
            )
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ConfigError(
                f"--upstream-url must be an http:// or https:// URL, got {self.url!r}"
            )

    @property
    def label(self) -> str:
        """A short readable name: the server's package or script, or the URL's host."""
        if self.url is not None:
            return httpx2.URL(self.url).host or "upstream"
        words = [w for w in self.command[1:] if not w.startswith("-")] or [self.command[0]]
        name = re.split(r"[\\/]", words[0].rstrip("/\\"))[-1]
        name = re.sub(r"(@[\w.^~<>=*-]+)$", "", name) if not name.startswith("@") else name
        name = re.sub(r"\.(py|js|mjs|ts)$", "", name)
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:40] or "upstream"

    def kind(self, name: str | None = None) -> str:
        """The job kind of this upstream's calls: a readable name and a digest of the
        whole command or URL, so two proxies of different servers (or of one server
        with different arguments) on one database never run each other's calls."""
        if name:
            return PROXY_KIND_PREFIX + name
        what = "\0".join(self.command) if self.command else str(self.url)
        return f"{PROXY_KIND_PREFIX}{self.label}-{hashlib.sha256(what.encode()).hexdigest()[:8]}"


class _StderrToLog:
    """The upstream's stderr, a log line each (the pipe outlives restarts)."""

    def __init__(self, label: str) -> None:
        read_fd, write_fd = os.pipe()
        self.file = os.fdopen(write_fd, "w")
        self._reader = os.fdopen(read_fd, "r", errors="replace")
        self._thread = threading.Thread(target=self._pump, args=(label,), daemon=True,
                                        name="upstream stderr")  # fmt: skip
        self._thread.start()

    def _pump(self, label: str) -> None:
        for line in self._reader:
            upstream_log.info("%s: %s", label, line.rstrip("\n"))


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: Mapping[str, str]) -> AsyncIterator[Any]:
    """Streamable HTTP to ``url`` on an HTTP client of its own, closed with it (the SDK
    leaves a client it was given open)."""
    timeout = httpx2.Timeout(30.0, read=None)  # a call may take hours
    async with (
        create_mcp_http_client(headers=dict(headers), timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


@contextlib.asynccontextmanager
async def _watched(transport: Any, on_close: Callable[[], None]) -> AsyncIterator[Any]:
    """A transport whose end (the upstream exited, the stream broke) calls ``on_close``."""
    async with transport as (read, write):
        send, receive = anyio.create_memory_object_stream[Any](0)

        async def forward() -> None:
            try:
                async with send:
                    async for message in read:
                        await send.send(message)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
                pass
            finally:
                on_close()

        async with anyio.create_task_group() as group:
            group.start_soon(forward)
            try:
                yield receive, write
            finally:
                group.cancel_scope.cancel()


class Upstream:
    """One upstream server, kept connected: restarted (stdio) or reconnected (HTTP) with
    a growing pause when it goes away."""

    def __init__(self, spec: UpstreamSpec, *, first_connect_s: float = 60.0) -> None:
        self.spec = spec
        self.first_connect_s = first_connect_s
        self.tools: dict[str, Tool] = {}
        self.server_name: str | None = None
        self.last_error: str | None = None
        #: Called after the tool list changed (not on the first listing).
        self.on_tools_changed: Callable[[], Awaitable[None]] | None = None
        self._client: Client | None = None
        self._ready = asyncio.Event()
        self._ended = asyncio.Event()  # a connection ended (or never came up)
        self._lost = asyncio.Event()
        self._stderr: _StderrToLog | None = None
        self._listed = False  # the tools were listed once (later listings may change them)
        self._relists: set[asyncio.Task[None]] = set()

    # -- connection --------------------------------------------------------------------

    def _transport(self) -> Any:
        spec = self.spec
        if spec.url is not None:
            return _http_transport(spec.url, spec.headers)
        if self._stderr is None:
            self._stderr = _StderrToLog(spec.label)
        # The proxy's environment (a server's API keys live there), without our own
        # settings: the link-signing secret, the token and the database URL are not the
        # upstream's business.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_TOOLS_")}
        params = StdioServerParameters(command=spec.command[0], args=list(spec.command[1:]),
                                       env=env, cwd=spec.cwd)  # fmt: skip
        return stdio_client(params, errlog=self._stderr.file)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Upstream]:
        """Keep the upstream connected while the block runs; raises
        ``UpstreamUnavailable`` when the first connection does not come up."""
        supervisor = asyncio.create_task(self._supervise(), name="upstream supervisor")
        try:
            # Up, or the first attempt failed (a wrong command should say so at once).
            outcome = [
                asyncio.create_task(self._ready.wait()),
                asyncio.create_task(self._ended.wait()),
            ]
            await asyncio.wait({*outcome, supervisor}, timeout=self.first_connect_s,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            for waiting in outcome:
                waiting.cancel()
            if not self._ready.is_set():
                what = (
                    "did not start (its own messages, if any, are logged above)"
                    if self.spec.command
                    else "could not be reached"
                )
                raise UpstreamUnavailable(
                    f"the upstream server {self.spec.label} {what}: "
                    f"{self.last_error or f'no answer within {self.first_connect_s:g} s'}"
                )
            yield self
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await supervisor

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        pause = 0.5
        while True:
            began = loop.time()
            try:
                await self._session()
                self.last_error = "it closed the connection"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an upstream that fails to start or breaks
                self.last_error = _describe(exc)
            self._ended.set()
            self._ready.clear()
            self._client = None
            if loop.time() - began > 60:
                pause = 0.5  # it ran a good while: restart at once
            log.warning("the upstream server %s went away (%s); reconnecting in %.1f s",
                        self.spec.label, self.last_error, pause)  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)

    def _mark_lost(self, lost: asyncio.Event) -> None:
        """The connection behind ``lost`` is gone: no call may use it from now on."""
        lost.set()
        if lost is self._lost:
            self._ready.clear()

    async def _session(self) -> None:
        closed = asyncio.Event()
        self._lost = closed
        client = Client(
            _watched(self._transport(), lambda: self._mark_lost(closed)),
            message_handler=self._on_message,
            client_info=Implementation(name="agent-tools-proxy", version=_version()),
        )
        async with client:
            self._client = client
            info = client.server_info
            self.server_name = info.name if info is not None else None
            await self._list_tools(client)
            self._ready.set()
            log.info("upstream %s connected (%s); tools: %s", self.spec.label,
                     self.server_name or "unnamed", ", ".join(self.tools) or "none")  # fmt: skip
            watch = asyncio.create_task(self._watch_tools(client))
            try:
                await closed.wait()
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watch

    async def _watch_tools(self, client: Client) -> None:
        """On 2026-07-28 a changed tool list is announced on a ``subscriptions/listen``
        stream (on 2025-11-25 it comes as a notification: ``_on_message``)."""
        tools = client.server_capabilities.tools
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS or not (
            tools and tools.list_changed
        ):
            return
        try:
            async with client.listen(tools_list_changed=True) as events:
                async for _ in events:
                    await self._relist(client)
        except Exception as exc:  # the stream ends with the connection
            log.debug("the upstream's tool-list stream ended: %s", _describe(exc))

    async def _list_tools(self, client: Client) -> None:
        tools: dict[str, Tool] = {}
        cursor: str | None = None
        for _ in range(100):
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            tools.update((tool.name, tool) for tool in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        changed = self._listed and tools != self.tools
        self.tools, self._listed = tools, True
        if changed and self.on_tools_changed is not None:
            await self.on_tools_changed()

    async def _on_message(self, message: Any) -> None:
        root = getattr(message, "root", message)
        if isinstance(root, ToolListChangedNotification) and self._client is not None:
            relist = asyncio.get_running_loop().create_task(self._relist(self._client))
            self._relists.add(relist)
            relist.add_done_callback(self._relists.discard)

    async def _relist(self, client: Client) -> None:
        try:
            await self._list_tools(client)
            log.info("the upstream's tools changed; now: %s", ", ".join(self.tools) or "none")
        except Exception as exc:
            log.warning("could not list the upstream's tools again: %s", _describe(exc))

    # -- calls ---------------------------------------------------------------------------

    async def call(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        key: str,
        progress: ProgressFnT | None = None,
        connect_s: float = 60.0,
    ) -> dict[str, Any]:
        """Call ``tool`` upstream; its ``CallToolResult`` as JSON. A call that finds the
        connection gone before it was sent (an HTTP session the upstream no longer
        knows: it restarted) is sent again on the new connection — it never reached the
        tool; one cut off after it was sent is not (``UpstreamLost``)."""
        meta = cast(RequestParamsMeta, {IDEMPOTENCY_KEY: key})
        for _ in range(3):
            client, lost = await self._connected(connect_s)
            try:
                result = await self._send(client, lost, tool, arguments, progress, meta)
            except _SessionGone:
                continue
            return _as_given(result)
        raise UpstreamUnavailable(
            f"the upstream server {self.spec.label} keeps dropping its session; try again later"
        )

    async def _connected(self, connect_s: float) -> tuple[Client, asyncio.Event]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_s
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                raise UpstreamUnavailable(
                    f"the upstream server {self.spec.label} is not running "
                    f"({self.last_error or 'it has not started'})"
                ) from None
            client, lost = self._client, self._lost
            if client is not None and not lost.is_set():
                return client, lost
            await asyncio.sleep(0.01)  # the session is being replaced: wait for the new one

    async def _send(
        self,
        client: Client,
        lost: asyncio.Event,
        tool: str,
        arguments: Mapping[str, Any],
        progress: ProgressFnT | None,
        meta: RequestParamsMeta,
    ) -> CallToolResult:
        call = asyncio.ensure_future(
            client.session.call_tool(tool, dict(arguments), progress_callback=progress, meta=meta)
        )
        gone = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            call.cancel()  # a cancelled job: the SDK tells the upstream
            with contextlib.suppress(BaseException):
                await call
            raise
        finally:
            gone.cancel()
        if not call.done():
            call.cancel()
            with contextlib.suppress(BaseException):
                await call
            raise UpstreamLost(f"the upstream server {self.spec.label} exited during the call")
        try:
            return call.result()
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._mark_lost(lost)
                raise UpstreamLost(
                    f"the upstream server {self.spec.label} went away during the call"
                ) from exc
            if self.spec.url is not None and "session terminated" in str(exc).lower():
                self._mark_lost(lost)  # it restarted and forgot our session: reconnect
                raise _SessionGone from exc
            if exc.code in _REFUSALS:
                raise UpstreamRefused(f"the upstream server refused the call: {exc}") from exc
            raise UpstreamFailed(f"the upstream server could not answer: {exc}") from exc
        except (
            httpx2.HTTPError,
            OSError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ) as exc:
            self._mark_lost(lost)
            raise UpstreamLost(
                f"the connection to the upstream server {self.spec.label} broke: {_describe(exc)}"
            ) from exc


def _as_given(result: CallToolResult) -> dict[str, Any]:
    """The upstream's answer as it gave it — content, structured content, ``isError``
    and its own ``_meta`` — without the envelope of its hop (``resultType`` and the
    protocol's reserved ``_meta`` keys, which this server sets for its own)."""
    answer: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    answer.pop("resultType", None)
    meta = {
        k: v for k, v in (answer.pop("_meta", None) or {}).items()
        if not k.startswith("io.modelcontextprotocol/") and k != JOB_META
    }  # fmt: skip
    if meta:
        answer["_meta"] = meta
    return answer


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return str(exc) or type(exc).__name__


def _version() -> str:
    from agent_tools.server import version

    return version()


# -- the job kind -----------------------------------------------------------------------


def _text_of(result: Mapping[str, Any]) -> str:
    texts = [c.get("text", "") for c in result.get("content", []) if c.get("type") == "text"]
    return " ".join(t for t in texts if t)[:500] or "no details"


def proxy_function(kind: str, upstream: Upstream, policy: Policy) -> DurableFunction:
    """The durable function behind every proxied call: one step, the upstream call."""
    limits: dict[str, asyncio.Semaphore] = {}

    async def call(ctx: Context, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        rules = policy.of(tool)

        last_written = [0.0]

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            done = progress
            fraction = done / total if total and 0 <= done <= total else None
            now = time.monotonic()
            if now - last_written[0] < PROGRESS_EVERY_S and fraction != 1.0:
                return  # a chatty upstream: at most a write every PROGRESS_EVERY_S
            last_written[0] = now
            words = message or (f"{done:g} of {total:g}" if total else f"{done:g} done")
            with contextlib.suppress(Exception):  # progress is best effort
                ctx.progress(words[:1000], fraction)

        async def upstream_call(
            job_id: str, tool: str, arguments: dict[str, Any]
        ) -> dict[str, Any]:
            limit = None
            if rules.concurrency is not None:
                limit = limits.setdefault(tool, asyncio.Semaphore(rules.concurrency))
            async with limit if limit is not None else contextlib.nullcontext():
                try:
                    async with asyncio.timeout(rules.timeout_s):
                        result = await upstream.call(tool, arguments, key=job_id,
                                                     progress=progress)  # fmt: skip
                except TimeoutError:  # cancelled upstream on the way out
                    raise UpstreamTimedOut(
                        f"{tool} did not answer within {rules.timeout_s:g} s (its policy's "
                        "timeout_s); the call was cancelled upstream"
                    ) from None
            step = current_step()
            if result.get("isError") and rules.retry and step and step.attempt < rules.max_attempts:
                raise UpstreamToolError(_text_of(result))  # another attempt, after a pause
            return result

        answer: dict[str, Any] = await ctx.run(
            upstream_call, ctx.job_id, tool, arguments, retry=rules.retry_policy()
        )
        return answer

    return DurableFunction(
        fn=call, name=kind, retry=Never(), timeout=None,
        description=f"A call to a tool of the upstream MCP server {upstream.spec.label}.",
    )  # fmt: skip


# -- the server ---------------------------------------------------------------------------


def _background(job: Mapping[str, Any], tool: str) -> CallToolResult:
    job_id = job["job_id"]
    body = {
        "job_id": job_id,
        "status": job["status"],
        "tool": tool,
        "message": (
            f"{tool} is still running in the background as job {job_id}. Call await_result "
            f'with job_ids ["{job_id}"] to get its result (it waits up to 50 s per call; call '
            "again while it is pending), or probe_status to check without waiting."
        ),
    }
    result = CallToolResult(content=[TextContent(type="text", text=body["message"])],
                            structured_content=body)  # fmt: skip
    result.meta = {JOB_META: job_id}  # a job in the background: the task shapes' cue
    return result


def _failed(job: Mapping[str, Any], tool: str) -> CallToolResult:
    error = job.get("error") or {}
    status = job["status"]
    text = f"{tool} failed (job {job['job_id']} {status}): {error.get('message', 'no details')}"
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


#: The most 2025-11-25 connections told of tool list changes (the latest that listed).
MAX_LISTENERS = 1000


class Proxy:
    """The proxy's pieces: the upstream, its policy and the job kind of its calls."""

    def __init__(self, spec: UpstreamSpec, policy: Policy, *, name: str | None = None) -> None:
        self.upstream = Upstream(spec)
        self.policy = policy
        self.kind = spec.kind(name)
        self.function = proxy_function(self.kind, self.upstream, policy)
        #: The tools that start jobs (the task shapes read this live).
        self.job_tools: set[str] = set()
        #: 2025-11-25 clients to tell of a new tool list, by connection (see
        #: ``remember_session``); the oldest are forgotten past ``MAX_LISTENERS``.
        self._sessions: dict[int, Any] = {}
        self._clashes: set[str] = set()
        self._unknown_in_policy: set[str] = set()
        self.upstream.on_tools_changed = self._tools_changed
        self.server: MCPServer | None = None
        self.service: JobService | None = None

    @property
    def kinds(self) -> dict[str, DurableFunction]:
        return {self.kind: self.function}

    def served_tools(self) -> dict[str, Tool]:
        """The upstream's tools as served: ours win a name clash; no output schemas."""
        served = {}
        for name, tool in self.upstream.tools.items():
            if name in OWN_TOOLS:
                if name not in self._clashes:
                    self._clashes.add(name)
                    log.warning("the upstream's tool %r is not served: the proxy's own tool "
                                "has that name", name)  # fmt: skip
                continue
            served[name] = tool.model_copy(update={"output_schema": None, "execution": None})
        for name in sorted(set(self.policy.tools) - set(served) - self._clashes):
            if name not in self._unknown_in_policy:  # a typo, most likely: say so once
                self._unknown_in_policy.add(name)
                tools = ", ".join(sorted(served)) or "none"
                log.warning("the policy names the tool %r, which the upstream does not have "
                            "(its tools: %s)", name, tools)  # fmt: skip
        self.job_tools.clear()
        self.job_tools.update(served)
        return served

    async def _tools_changed(self) -> None:
        self.served_tools()
        for key, session in list(self._sessions.items()):
            try:
                await session.send_tool_list_changed()
            except Exception:  # that client is gone: forget it
                self._sessions.pop(key, None)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server._subscriptions.publish(ToolsListChanged())

    async def remember_session(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """Server middleware: sessions of 2025-11-25 clients, to tell of a new tool list
        (2026-07-28 clients hear it through ``subscriptions/listen``)."""
        if ctx.method == "tools/list" and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            # ``ctx.session`` is made anew for every request, but any of them can still
            # notify its connection; the connection's ``initialize`` params object names
            # it (the same object for all of its requests), as in ``resources``.
            params = ctx.session.client_params
            if params is not None:
                key = id(params)
                self._sessions.pop(key, None)
                self._sessions[key] = ctx.session
                while len(self._sessions) > MAX_LISTENERS:
                    self._sessions.pop(next(iter(self._sessions)))
        return await call_next(ctx)

    async def handle(self, tool: str, arguments: Mapping[str, Any]) -> CallToolResult:
        """A call to an upstream tool: a durable job, answered inline when quick."""
        if self.service is None:
            raise RuntimeError("the proxy's server is not built")
        service = self.service
        rules = self.policy.of(tool)
        started = await service.astart_job(
            self.kind, {"tool": tool, "arguments": dict(arguments)}, None
        )
        job_id = started["job_id"]
        job = started
        if TASK_REQUESTED.get():
            # A 2025-11-25 task-augmented call is answered with a task, however quick
            # the call: the job (done or not) goes to the task shape, no inline wait.
            return _background(job, tool)
        if job["status"] not in SETTLED and rules.wait_s > 0:
            await service.store.wait(job_id, timeout=rules.wait_s)
            job = (await service.aprobe([job_id]))[0]
        if job["status"] == "completed":
            return CallToolResult.model_validate(job["result"])
        if job["status"] in SETTLED:
            return _failed(job, tool)
        return _background(job, tool)


def build_proxy_server(
    store: SqlStore,
    proxy: Proxy,
    *,
    await_cap_s: float = 50.0,
    approval_link: Callable[[str], str] | None = None,
    trace_messages: bool = False,
) -> MCPServer:
    from agent_tools.server import build_server

    class ProxyServer(MCPServer):
        async def list_tools(self) -> list[Tool]:
            return [*await super().list_tools(), *proxy.served_tools().values()]

        async def call_tool(
            self, name: str, arguments: dict[str, Any], context: ToolContext[Any, Any] | None = None
        ) -> Any:
            if name in proxy.job_tools and name in proxy.upstream.tools:
                return await proxy.handle(name, arguments)
            return await super().call_tool(name, arguments, context)

        def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
            tool = proxy.upstream.tools.get(name)
            if tool is not None and name not in OWN_TOOLS:
                return tool.input_schema
            return super()._tool_input_schema(name)

    proxy.served_tools()
    server = build_server(
        store, proxy.kinds, await_cap_s=await_cap_s, approval_link=approval_link,
        server_class=ProxyServer, tools_served=OWN_TOOLS, job_tools=proxy.job_tools,
        tools_list_changed=True, name=f"agent-tools proxy of {proxy.upstream.spec.label}",
        instructions=instructions(proxy), middleware_first=[proxy.remember_session],
        trace_messages=trace_messages,
    )  # fmt: skip
    proxy.server = server
    proxy.service = server.service  # type: ignore[attr-defined]
    return server


def instructions(proxy: Proxy) -> str:
    name = proxy.upstream.server_name or proxy.upstream.spec.label
    return (
        f"The tools of {name}, made durable. A call that finishes within "
        f"{proxy.policy.defaults.wait_s:g} s answers as usual. A longer one answers with a "
        "job_id instead and keeps running: call await_result with that job_id to get its "
        "result (it waits up to 50 s per call; call again while pending), probe_status to "
        "check without waiting, cancel_job to stop it. list_jobs finds lost job ids."
    )


__all__ = [
    "DEFAULT_INLINE_WAIT_S",
    "IDEMPOTENCY_KEY",
    "Policy",
    "Proxy",
    "ToolPolicy",
    "Upstream",
    "UpstreamSpec",
    "build_proxy_server",
    "load_policy",
    "parse_header",
]
