"""Signed approval links and form tokens.

An approval link carries ``<approval id>.<HMAC(key, approval id)>``: unguessable,
checkable without a lookup, and derivable again whenever ``probe_status`` or the CLI
shows it. The key is not in the store (nothing secret is): it comes from
``$AGENT_TOOLS_SECRET``, else a file ``secret.key`` (mode 0600) in the user's data
directory, created on first use. Processes that share a store on several machines
must share the key through the environment.

Links must open where the server really is. A server records the address of its pages
in ``servers/<pid>.json`` in the user's data directory while it runs; the CLI finds
the record of a live server on the same database there. ``--public-url`` (or
``$AGENT_TOOLS_URL``) overrides both, for servers people reach by another name.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

from agent_tools.config import ConfigError, data_dir

SECRET_ENV = "AGENT_TOOLS_SECRET"
URL_ENV = "AGENT_TOOLS_URL"


#: A key file shorter than this was not written by us whole: never sign with it.
MIN_KEY_BYTES = 32


def load_key() -> bytes:
    """The signing key: ``$AGENT_TOOLS_SECRET``, else the key file, made on first use.

    The file appears whole or not at all (written aside, then linked into place), so a
    process starting at the same moment never reads it empty; and a key file that is
    empty or cut short is refused, never used (an empty key would make every link and
    form token forgeable)."""
    if value := os.environ.get(SECRET_ENV):
        return value.encode()
    path = data_dir() / "secret.key"
    if not path.exists():
        aside = path.with_name(f".secret.key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: use its key
                os.link(aside, path)
        finally:
            aside.unlink(missing_ok=True)
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"the link-signing key file {path} is empty or damaged; delete it (a new one is "
            f"made at the next start, and links made before stop working) or set ${SECRET_ENV}"
        )
    return key


class Signer:
    def __init__(self, key: bytes | None = None) -> None:
        self.key = key if key is not None else load_key()

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self.key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()[:40]

    def approval_token(self, approval_id: str) -> str:
        encoded = base64.urlsafe_b64encode(approval_id.encode()).decode().rstrip("=")
        return f"{encoded}.{self._mac('approval', approval_id)}"

    def approval_id(self, token: str) -> str | None:
        """The approval a token was made for, or None if it is malformed or tampered."""
        encoded, _, mac = token.partition(".")
        try:
            approval_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return approval_id if hmac.compare_digest(mac, self._mac("approval", approval_id)) else None

    def form_token(self, target: str) -> str:
        return self._mac("form", target)

    def check_form_token(self, target: str, token: str) -> bool:
        return hmac.compare_digest(token, self.form_token(target))


# -- where the pages are ------------------------------------------------------------------


def _records_dir() -> Path:
    directory = data_dir() / "servers"
    directory.mkdir(exist_ok=True, mode=0o700)
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record_pages(db_url: str, url: str) -> Path:
    """Note that this process serves the pages of ``db_url`` at ``url`` (until
    ``forget_pages``); a record left by a killed process is ignored once it is dead."""
    path = _records_dir() / f"{os.getpid()}.json"
    record = {"db": db_url, "url": url, "pid": os.getpid(), "host": socket.gethostname(),
              "started_at": int(time.time() * 1000)}  # fmt: skip
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(path)
    return path


def forget_pages(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def running_pages(db_url: str) -> str | None:
    """The pages URL of the newest live server on ``db_url`` on this host, if any."""
    newest: tuple[int, str] | None = None
    for path in _records_dir().glob("*.json"):
        try:
            record = json.loads(path.read_text())
            pid, host = int(record["pid"]), str(record["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host != socket.gethostname() or record.get("db") != db_url:
            continue
        if not _alive(pid):
            forget_pages(path)
            continue
        if newest is None or int(record["started_at"]) > newest[0]:
            newest = (int(record["started_at"]), str(record["url"]))
    return None if newest is None else newest[1]


def pages_base(db_url: str, public_url: str | None = None) -> str | None:
    """Where people open the pages: ``--public-url``, ``$AGENT_TOOLS_URL``, or a live
    server's record; None when no pages are served for this database."""
    base = public_url or os.environ.get(URL_ENV) or running_pages(db_url)
    return base.rstrip("/") if base else None


def approval_links(signer: Signer, base: str | None) -> Callable[[str], str] | None:
    """Makes an approval's link on the pages at ``base``; None when no pages are served."""
    if base is None:
        return None
    root = base.rstrip("/")
    return lambda approval_id: f"{root}/approve/{signer.approval_token(approval_id)}"
