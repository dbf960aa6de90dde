"""Serving the MCP server over streamable HTTP, safely.

* Loopback by default; binding anywhere else requires a bearer token.
* Every request must carry ``Authorization: Bearer <token>`` when a token is set
  (compared in constant time); the token is never logged or stored.
* ``Host`` and ``Origin`` are checked against this server's own addresses (DNS
  rebinding), and request bodies are size-capped.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

MAX_BODY_BYTES = 4 * 1024 * 1024


class UnsafeBind(ValueError):
    """A non-loopback address without a token."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise UnsafeBind(
            f"refusing to serve on {host} without a token: anyone who can reach it could run "
            "jobs. Set --token (or AGENT_TOOLS_TOKEN), or bind to 127.0.0.1"
        )


class BearerToken:
    """ASGI middleware: 401 on ``/mcp`` unless the request carries the server's bearer
    token. (The web pages check the token themselves: browsers send a cookie.)"""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/mcp"):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = b'{"error": "missing or wrong token; send Authorization: Bearer <token>"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def allowed_hosts(host: str, port: int) -> set[str]:
    return {f"{name}:{port}" for name in {host, "127.0.0.1", "localhost"}}


def http_app(
    server: MCPServer, *, host: str, port: int, token: str | None, pages: Any = None
) -> Any:
    """The MCP endpoint at /mcp, with the web pages (``WebPages``) beside it if given."""
    check_bind(host, token)
    names = {host, "127.0.0.1", "localhost"}
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:{port}" for name in names],
        allowed_origins=[f"http://{name}:{port}" for name in names],
    )
    app = server.streamable_http_app(
        transport_security=security, max_request_body_size=MAX_BODY_BYTES, host=host
    )
    if pages is not None:
        app.router.routes.extend(pages.routes())
    return BearerToken(app, token) if token else app
