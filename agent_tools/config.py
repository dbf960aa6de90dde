"""Configuration: where the store lives, the server's token, and client configs.

* The store: ``--db``, else ``$AGENT_TOOLS_DB``, else a SQLite file in the user's data
  directory. A SQLite file is created readable by its owner only (0600, in a 0700
  directory when we make it): it holds job arguments, results and approval context.
  Commands that only read refuse a file that does not exist (a typo must not look
  like an empty store).
* The token: ``--token-file PATH`` or ``$AGENT_TOOLS_TOKEN_FILE`` (preferred: the token
  stays out of ``/proc/<pid>/cmdline`` and the environment), else ``$AGENT_TOOLS_TOKEN``,
  else ``--token``.
* ``client_config``: the exact MCP client entry for this install (absolute paths).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platformdirs import user_data_path
from sqlalchemy.engine import make_url

DB_ENV = "AGENT_TOOLS_DB"
TOKEN_ENV = "AGENT_TOOLS_TOKEN"
TOKEN_FILE_ENV = "AGENT_TOOLS_TOKEN_FILE"
DEFAULT_PORT = 8765
CLIENTS = ("claude-desktop", "claude-code", "cursor")


class ConfigError(Exception):
    """A setting that cannot work; the message says which and what to do."""


def data_dir() -> Path:
    directory: Path = user_data_path("agent-tools", appauthor=False)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def default_db_url() -> str:
    return f"sqlite:///{data_dir() / 'agent-tools.db'}"


def resolve_db_url(cli_value: str | None) -> str:
    """A bare path means a SQLite file; URLs pass through unchanged."""
    value = cli_value or os.environ.get(DB_ENV) or default_db_url()
    if "://" not in value:
        value = f"sqlite:///{Path(value).expanduser().resolve()}"
    return value


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None for other databases (and unparsable URLs,
    which ``open_store`` reports)."""
    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None  # not a file's path: ``open_store`` refuses it, with what to give
    return Path(parsed.database)


def prepare_store_file(url: str) -> None:
    """Create a new SQLite file owner-only (0600) before the engine opens it, so no
    other local user can read job arguments, results or approval context. SQLite
    creates the -wal and -shm files with the main file's permissions."""
    path = sqlite_path(url)
    if path is None or path.exists():
        return
    if not path.parent.exists():
        raise ConfigError(
            f"the directory of the database {str(path)!r} does not exist; create it or "
            "give another --db"
        )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def require_existing_store(url: str) -> None:
    """For commands that only read: a missing SQLite file is a mistake, not a store."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise ConfigError(
            f"no database at {str(path)!r}; check --db (or ${DB_ENV}). A server creates "
            "it on first start: agent-tools serve --db PATH"
        )


def resolve_token(cli_token: str | None, token_file: str | None) -> str | None:
    """The server's bearer token, from a file, the environment or the command line."""
    path = token_file or os.environ.get(TOKEN_FILE_ENV)
    if path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {path!r}: {exc.strerror}") from exc
        if not token:
            raise ConfigError(f"the token file {path!r} is empty")
        return token
    given = cli_token or os.environ.get(TOKEN_ENV) or None
    if given is not None and len(given) < 16:
        raise ConfigError(
            "the token is shorter than 16 characters; use a long random one, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return given


def agent_tools_command() -> str:
    """The absolute path of the ``agent-tools`` script of this install."""
    beside = Path(sys.executable).parent / "agent-tools"
    if beside.exists():
        return str(beside)
    found = shutil.which("agent-tools")
    return str(Path(found).resolve()) if found else str(beside)


def client_config(
    target: str,
    *,
    db_url: str,
    jobs: Sequence[str],
    http: bool = False,
    port: int = DEFAULT_PORT,
    token: bool = False,
    ui_port: int | None = None,
    upstream: Sequence[str] = (),
    proxy: ProxyOptions | None = None,
) -> dict[str, Any]:
    """The ``mcpServers`` entry a client needs to run (stdio) or reach (HTTP) this
    install. Clients start servers from a directory of their own, so every path is
    absolute and job modules are found through ``PYTHONPATH``. With ``upstream`` (a
    command) or ``proxy.url``, the entry runs that server behind ``agent-tools proxy``."""
    if target not in CLIENTS:
        raise ConfigError(f"unknown client {target!r}; choose one of {', '.join(CLIENTS)}")
    if upstream or (proxy is not None and proxy.url):
        if http or jobs:
            raise ConfigError(
                "--proxy launches the proxy over stdio with the server after '--'; "
                "leave out --http and --jobs"
            )
        return _proxy_config(target, db_url, ui_port, upstream, proxy or ProxyOptions())
    if http:
        if target == "claude-desktop":
            raise ConfigError(
                "Claude Desktop launches servers over stdio; run the config command "
                "without --http (or use a stdio-to-HTTP bridge)"
            )
        url = f"http://127.0.0.1:{port}/mcp"
        entry: dict[str, Any] = (
            {"type": "http", "url": url} if target == "claude-code" else {"url": url}
        )
        if token:
            entry["headers"] = {"Authorization": f"Bearer ${{{TOKEN_ENV}}}"}
        return {"mcpServers": {"agent-tools": entry}}
    args = ["serve", "--db", db_url]
    for module in jobs:
        args += ["--jobs", module]
    if ui_port is not None:
        args += ["--ui-port", str(ui_port)]
    env = {"PYTHONPATH": os.getcwd()} if jobs else {}
    entry = {"command": agent_tools_command(), "args": args, "env": env}
    if target == "claude-code":
        entry = {"type": "stdio", **entry}
    return {"mcpServers": {"agent-tools": entry}}


@dataclass(frozen=True)
class ProxyOptions:
    """What ``config --proxy`` passes on to ``agent-tools proxy``."""

    url: str | None = None
    headers: tuple[str, ...] = ()
    policy: str | None = None
    inline_wait: float | None = None
    #: ``NAME=VALUE``: the entry's environment (the upstream's API keys, say).
    env: tuple[str, ...] = ()


def _proxy_config(
    target: str, db_url: str, ui_port: int | None, upstream: Sequence[str], options: ProxyOptions
) -> dict[str, Any]:
    from agent_tools.proxy import UpstreamSpec

    spec = UpstreamSpec(command=tuple(upstream), url=options.url)
    env: dict[str, str] = {}
    for pair in options.env:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"--env must look like NAME=VALUE, got {pair!r}")
        env[name] = value
    # Each client's proxy its own job kind: proxies on one database with one name share
    # their calls (after a crash any of them may make the others' calls again), and two
    # clients may give the server different credentials.
    args = ["proxy", "--db", db_url, "--name", f"{spec.label}-{target}"]
    if ui_port is not None:
        args += ["--ui-port", str(ui_port)]
    if options.policy is not None:
        args += ["--policy", str(Path(options.policy).expanduser().absolute())]
    if options.inline_wait is not None:
        args += ["--inline-wait", f"{options.inline_wait:g}"]
    if options.url is not None:
        args += ["--upstream-url", options.url]
        for header in options.headers:
            args += ["--upstream-header", header]
    else:
        # Clients start servers from a directory of their own: paths given relative to
        # here (a script, a venv's python) become absolute; names (npx, uvx) stay.
        args += ["--", *(_absolute_if_path(word) for word in upstream)]
    wrapped: dict[str, Any] = {"command": agent_tools_command(), "args": args, "env": env}
    if target == "claude-code":
        wrapped = {"type": "stdio", **wrapped}
    return {"mcpServers": {spec.label: wrapped}}


def _absolute_if_path(word: str) -> str:
    if word.startswith("-") or not (("/" in word and Path(word).exists()) or Path(word).is_file()):
        return word
    return str(Path(word).absolute())  # not resolve(): a venv's python is a symlink
