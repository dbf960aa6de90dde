"""Logs go to stderr (stdout belongs to the MCP protocol in stdio mode), as text for
people or, with ``--log-format json``, one JSON object per line for log collectors:
``{"ts", "level", "logger", "message", ...}`` plus ``exc`` for an exception and any
``extra={...}`` fields the call gave."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

# What every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(log_format: LogFormat = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Access logs and every outgoing request are noise here; their errors still come through.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The SDK logs each HTTP session's start and end: per-connection noise, like access
    # logs. A client that leaves mid-request is one line, not an error with a traceback.
    for name in ("mcp.server.streamable_http", "mcp.server.streamable_http_manager"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sdk = logging.getLogger("mcp.server.streamable_http")
    if not any(isinstance(f, _GoneClientsInOneLine) for f in sdk.filters):
        sdk.addFilter(_GoneClientsInOneLine())


class _GoneClientsInOneLine(logging.Filter):
    """The SDK's traceback for a client that disconnected before its request was whole
    becomes one line of ours: a stalled or impatient client is not a server error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ == "ClientDisconnect":
            logging.getLogger("agent_tools.http").info(
                "a client went away before sending its whole request to /mcp"
            )
            return False
        return True
