"""Signed approval links and form tokens.

An approval link carries ``<approval id>.<HMAC(key, approval id)>``: unguessable,
checkable without a lookup, and derivable again whenever ``probe_status`` or the CLI
shows it. The key is not in the store (nothing secret is): it comes from
``$AGENT_TOOLS_SECRET``, else a file ``secret.key`` (mode 0600) in the user's data
directory, created on first use. Processes that share a store on several machines
must share the key through the environment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from platformdirs import user_data_path

SECRET_ENV = "AGENT_TOOLS_SECRET"


def load_key() -> bytes:
    if value := os.environ.get(SECRET_ENV):
        return value.encode()
    directory = user_data_path("agent-tools", appauthor=False)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "secret.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Path(path).read_bytes().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return Path(path).read_bytes().strip()


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
