"""Listening on HTTP safely: the MCP endpoint and the web pages.

One rule for every listener (``serve --http`` and the pages beside stdio alike):

* Loopback by default; binding anywhere else requires a bearer token.
* ``Host`` must name this server (DNS rebinding): its bind address, loopback names,
  the host of ``--public-url`` and any ``--allowed-host``; IPv6 hosts in brackets.
* A request that changes something (POST) must not come from a foreign ``Origin``;
  that is checked, like the size, before any byte of the body is read. Every body is
  capped (``Content-Length`` at once, chunked bodies as they arrive).
* ``/mcp`` needs ``Authorization: Bearer <token>`` when the server has a token
  (compared in constant time; never logged or stored). The pages check the token
  themselves, since browsers send it as a cookie.
* A client that goes away mid-request costs one log line, not a traceback.

``bind`` opens the listening socket before anything else starts, so a port that is
taken is a clear error at start (or, for the default pages port, a free port instead).
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("agent_tools.http")

MAX_BODY_BYTES = 4 * 1024 * 1024  # an MCP message
MAX_FORM_BYTES = 64 * 1024  # a page's form: a decision and a comment


class UnsafeBind(ValueError):
    """A non-loopback address without a token."""


class PortUnavailable(OSError):
    """The port cannot be bound; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, what: str = "serve") -> None:
    if not is_loopback(host) and not token:
        raise UnsafeBind(
            f"refusing to {what} on {host} without a token: anyone who can reach it could "
            "run or cancel jobs. Set --token-file (or AGENT_TOOLS_TOKEN_FILE, "
            "AGENT_TOOLS_TOKEN), or bind to 127.0.0.1"
        )


def host_header(host: str, port: int) -> str:
    """How ``host:port`` appears in a Host header (IPv6 in brackets)."""
    bare = host.strip("[]")
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def url_for(host: str, port: int) -> str:
    """The base URL of a listener; a wildcard bind is reached through loopback here."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host.strip("[]") == "::":
        host = "::1"
    return f"http://{host_header(host, port)}"


@dataclass(frozen=True)
class Listener:
    """Where a server listens, and the names it answers to."""

    host: str
    port: int
    token: str | None = None
    public_url: str | None = None
    extra_hosts: tuple[str, ...] = field(default=())

    @property
    def url(self) -> str:
        """Where people reach it: the public URL, else where it listens."""
        return (self.public_url or self.local_url).rstrip("/")

    @property
    def local_url(self) -> str:
        return url_for(self.host, self.port)

    def allowed_hosts(self) -> set[str]:
        names = {self.host, "127.0.0.1", "localhost", "::1"}
        allowed = {host_header(name, self.port) for name in names}
        if self.public_url:
            netloc = urlsplit(self.public_url).netloc.lower()
            allowed.add(netloc)
            if ":" not in netloc.rsplit("]", 1)[-1]:  # no explicit port: the scheme's default
                allowed.add(netloc + (":443" if self.public_url.startswith("https") else ":80"))
        for extra in self.extra_hosts:
            extra = extra.lower()
            allowed.add(extra if _has_port(extra) else host_header(extra, self.port))
            if not _has_port(extra):
                allowed.add(extra)  # a proxy on the default port
        return allowed

    def allowed_origins(self) -> set[str]:
        return (
            {f"http://{h}" for h in self.allowed_hosts()}
            | {f"https://{h}" for h in self.allowed_hosts()}
            | ({self.public_url.rstrip("/")} if self.public_url else set())
        )


def _has_port(host: str) -> bool:
    return host.rsplit("]", 1)[-1].count(":") == 1 if not host.startswith("[") else "]:" in host


def bind(host: str, port: int, *, fallback_to_free: bool = False) -> socket.socket:
    """A listening socket on ``host:port``. When the port is taken and
    ``fallback_to_free`` is set (the default pages port), a free port instead."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    if bare == "localhost":
        bare, family = "127.0.0.1", socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every streamed answer waited ~40 ms on Nagle and a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((bare, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and fallback_to_free:
                log.info("port %s is taken; serving the pages on a free port instead", port)
                sock.bind((bare, 0))
            else:
                raise
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortUnavailable(
                exc.errno,
                f"port {port} on {host} is already in use (another agent-tools server?); "
                "stop that one or choose another port",
            ) from exc
        if exc.errno == errno.EACCES:
            raise PortUnavailable(
                exc.errno, f"not allowed to listen on port {port}; use a port above 1023"
            ) from exc
        raise PortUnavailable(
            exc.errno or 0, f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    sock.setblocking(False)
    return sock


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain"
) -> None:
    headers = [(b"content-type", content_type + b"; charset=utf-8"), (b"connection", b"close")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(BaseException):
    """Raised from ``receive`` past the cap. A BaseException, so that the app's own
    error handling (Starlette answers 500 to any Exception) lets it through to us."""


class Guard:
    """ASGI middleware in front of everything a listener serves (see the module doc)."""

    def __init__(self, app: ASGIApp, listener: Listener, *, mcp_body_cap: int = MAX_BODY_BYTES,
                 form_body_cap: int = MAX_FORM_BYTES) -> None:  # fmt: skip
        self.app = app
        self.listener = listener
        self.hosts = listener.allowed_hosts()
        self.origins = listener.allowed_origins()
        self.bearer = f"Bearer {listener.token}".encode() if listener.token else None
        self.mcp_cap, self.form_cap = mcp_body_cap, form_body_cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.hosts:
            await _respond(
                send, 421, b"This server does not answer to that host name. Add it with "
                b"--allowed-host or --public-url.",
            )  # fmt: skip
            return
        mcp = scope["path"] == "/mcp" or scope["path"].startswith("/mcp/")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get(b"origin")
            if origin is not None and origin.decode("latin-1").rstrip("/") not in self.origins:
                await _respond(send, 403, b"Request refused: it came from another site.")
                return
        if mcp and self.bearer is not None:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.bearer):
                await _respond(
                    send, 401,
                    b'{"error": "missing or wrong token; send Authorization: Bearer <token>"}',
                    b"application/json",
                )  # fmt: skip
                return
        cap = self.mcp_cap if mcp else self.form_cap
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > cap):
            await _respond(send, 413, f"Request body too large: at most {cap} bytes.".encode())
            return
        await self._call_capped(scope, receive, send, cap)

    async def _call_capped(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _respond(send, 413, f"Request body too large: at most {cap} bytes.".encode())
        except ClientDisconnect:
            client = scope.get("client") or ("?", 0)
            # An approval link's token is its credential: never in the log.
            path = "/approve/<token>" if scope["path"].startswith("/approve/") else scope["path"]
            log.info("client %s:%s went away before sending its whole request to %s",
                     client[0], client[1], path)  # fmt: skip


def mcp_app(server: MCPServer, listener: Listener, pages: Any = None) -> Any:
    """The MCP endpoint at /mcp, with the web pages (``WebPages``) beside it if given,
    behind the ``Guard``."""
    check_bind(listener.host, listener.token)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(listener.allowed_hosts()),
        allowed_origins=sorted(listener.allowed_origins()),
    )
    app = server.streamable_http_app(
        transport_security=security, max_request_body_size=MAX_BODY_BYTES, host=listener.host
    )
    if pages is not None:
        app.router.routes.extend(pages.routes())
    return Guard(app, listener)


def pages_app(pages: Any, listener: Listener) -> Any:
    """The web pages alone (beside a stdio server), behind the ``Guard``."""
    from starlette.applications import Starlette

    check_bind(listener.host, listener.token, "serve the pages")
    return Guard(Starlette(routes=pages.routes()), listener)


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> set[str]:
    """The Host header values a listener on ``host:port`` answers to."""
    return Listener(host, port, extra_hosts=tuple(extra)).allowed_hosts()
