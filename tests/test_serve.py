"""The server as a process and its listeners' safety: pages beside stdio, exiting with
the client, ports that cannot be bound, tokens on every listener, checks before any
body is read, capped bodies, host names, IPv6 loopback, owner-only database files, and
one log line for a client that goes away. Real subprocesses, real sockets."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from agent_tools import builtin_jobs
from agent_tools.links import Signer
from promises import Runtime, open_store
from tests.waiting import eventually, until

ROOT = Path(__file__).parent.parent
AGENT_TOOLS = str(Path(sys.executable).parent / "agent-tools")  # the installed command
SECRET = "serve-test-secret"
TOKEN = "a-long-enough-token-for-tests"
pytestmark = pytest.mark.slow


def command(db: Path, *extra: str) -> list[str]:
    return [AGENT_TOOLS, "serve", "--db", str(db), *extra]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_TOOLS_")}
    return {**base, "AGENT_TOOLS_SECRET": SECRET, **extra}


def pages_url(log: Path) -> str:
    """The pages' URL from the server's start line."""

    def found() -> str | None:
        match = re.search(r"pages: (https?://\S+)/", log.read_text() if log.exists() else "")
        return match[1] if match else None

    url: str = until(found, what="the server's start line")
    return url


class Running:
    """A server subprocess, stderr to a file."""

    def __init__(self, args: list[str], log: Path, **environment: str) -> None:
        self.log = log
        with log.open("ab") as errors:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env(**environment),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for server in started:
        server.stop()


def start(running: list[Running], args: list[str], log: Path, **environment: str) -> Running:
    server = Running(args, log, **environment)
    running.append(server)
    return server


def http_server(running: list[Running], tmp_path: Path, *extra: str, **environment: str) -> str:
    log = tmp_path / f"http-{len(running)}.log"
    start(running, command(tmp_path / "h.db", "--http", "--port", "0", *extra), log,
          **environment)  # fmt: skip
    return pages_url(log)


# -- pages beside stdio -------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_stdio_server_serves_its_pages_and_hands_out_links_that_open(
    tmp_path: Path,
) -> None:
    log = tmp_path / "stdio.log"
    params = StdioServerParameters(
        command=AGENT_TOOLS, args=command(tmp_path / "s.db")[1:], env=env(), cwd=str(ROOT)
    )
    with log.open("w") as errors:
        async with Client(stdio_client(params, errlog=errors)) as client:
            started = await client.call_tool(
                "start_job", {"kind": "approval", "args": {"question": "Ship it?"}}
            )
            job_id = (started.structured_content or {})["job_id"]
            base = pages_url(log)

            async def waiting() -> dict[str, Any] | None:
                probe = await client.call_tool("probe_status", {"job_ids": [job_id]})
                job = (probe.structured_content or {})["jobs"][0]
                return job if job["status"] == "waiting" else None

            job = await eventually(waiting, what=f"{job_id} waits")
            link = job["waiting_for"]["link"]
            assert link.startswith(base + "/approve/")  # where the pages really are
            opened = httpx.get(link)
            assert opened.status_code == 200 and "Ship it?" in opened.text
    line = next(line for line in log.read_text().splitlines() if "agent-tools serving" in line)
    assert "over stdio" in line and f"{tmp_path}/s.db" in line and "approval, sleep" in line
    assert "a worker runs here" in line and f"pages: {base}/" in line


def test_when_the_pages_port_is_taken_a_stdio_server_uses_a_free_one(
    tmp_path: Path, running: list[Running]
) -> None:
    holder = socket.socket()

    def hold_the_default_port() -> bool:
        # Other tests' stdio servers take 8765 for a while; "taken already" is not enough,
        # since such a server may leave before ours starts. Hold it ourselves.
        try:
            holder.bind(("127.0.0.1", 8765))
        except OSError:
            return False
        holder.listen()
        return True

    try:
        until(hold_the_default_port, timeout=60, what="port 8765 free for this test to hold")
        server = start(running, command(tmp_path / "t.db"), tmp_path / "t.log")
        url = pages_url(server.log)
        assert url != "http://127.0.0.1:8765" and httpx.get(url + "/").status_code == 200
        assert (
            "port 8765 is taken; serving the pages on a free port instead" in server.log.read_text()
        )
    finally:
        holder.close()


def test_the_server_exits_promptly_when_its_client_closes_stdin(
    tmp_path: Path, running: list[Running]
) -> None:
    server = start(running, command(tmp_path / "e.db", "--ui-port", "0"), tmp_path / "e.log")
    pages = pages_url(server.log)
    port = int(pages.rsplit(":", 1)[1])
    assert httpx.get(pages + "/").status_code == 200
    assert server.proc.stdin is not None
    server.proc.stdin.close()
    assert server.proc.wait(timeout=15) == 0
    assert "the client closed stdin; stopping" in server.log.read_text()
    with socket.socket() as again:  # the port is free for the next server
        again.bind(("127.0.0.1", port))


def test_sigterm_stops_a_stdio_server_whose_client_keeps_stdin_open(
    tmp_path: Path, running: list[Running]
) -> None:
    server = start(running, command(tmp_path / "g.db", "--ui-port", "0"), tmp_path / "g.log")
    pages_url(server.log)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    assert "stopping on a signal" in server.log.read_text()


@pytest.mark.parametrize("mode", ["--ui-port", "--port"])
def test_a_port_that_cannot_be_bound_is_a_clear_error_at_start(tmp_path: Path, mode: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        args = command(tmp_path / "p.db", mode, port) + (["--http"] if mode == "--port" else [])
        result = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "choose another port" in result.stderr and "Traceback" not in result.stderr


# -- tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [["--ui-port", "0"], ["--http", "--port", "0"]])
def test_every_listener_beyond_loopback_needs_a_token(tmp_path: Path, mode: list[str]) -> None:
    result = subprocess.run(command(tmp_path / "n.db", "--host", "0.0.0.0", *mode), cwd=ROOT,
                            env=env(), capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 2
    assert "without a token" in result.stderr and "--token-file" in result.stderr


def test_the_token_comes_from_a_file_or_the_environment_not_the_command_line(
    tmp_path: Path, running: list[Running]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    base = http_server(running, tmp_path, AGENT_TOOLS_TOKEN_FILE=str(token_file))
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}  # past the token
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    assert httpx.post(base + "/mcp", json=body, headers=headers).status_code == 401
    authorized = {**headers, "Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(base + "/mcp", json=body, headers=authorized).status_code != 401
    cmdline = Path(f"/proc/{running[0].proc.pid}/cmdline").read_bytes()
    assert TOKEN.encode() not in cmdline
    base_env = http_server(running, tmp_path, AGENT_TOOLS_TOKEN=TOKEN)
    assert httpx.post(base_env + "/mcp", json=body, headers=headers).status_code == 401
    assert httpx.post(base_env + "/mcp", json=body, headers=authorized).status_code != 401


# -- before the body: origin, form token, size --------------------------------------------


def raw_request(base: str, head: str, body: bytes = b"", close_after: bool = False) -> str:
    """Send a request by hand (maybe only part of its body); the response, if any."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as conn:
        conn.sendall(head.encode() + b"\r\n" + body)
        if close_after:
            return ""
        conn.settimeout(10)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("latin-1")


def test_origin_and_form_token_are_checked_before_any_body_is_read(
    tmp_path: Path, running: list[Running]
) -> None:
    base = http_server(running, tmp_path)
    netloc = base.removeprefix("http://")
    with open_store(f"sqlite:///{tmp_path}/h.db") as store:
        Runtime(store).start(builtin_jobs.approval, "Pay?", id="pay")
        token = Signer(SECRET.encode()).approval_token("pay.0")
        until(lambda: (t := Runtime(store).tasks.get("pay")) and t.waiting_on, what="the wait")
    # Each request announces a 50 kB body and sends none of it: an answer proves the
    # server decided before reading.
    for path, origin in (
        (f"/approve/{token}?form_token=wrong", None),
        (f"/approve/{token}", None),
        (f"/approve/{token}?form_token=x", "http://evil.example"),
        ("/jobs/pay/cancel?form_token=wrong", None),
    ):
        head = f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\nContent-Length: 50000\r\n"
        head += "Content-Type: application/x-www-form-urlencoded\r\n"
        if origin:
            head += f"Origin: {origin}\r\n"
        answer = raw_request(base, head)
        assert answer.startswith("HTTP/1.1 403"), (path, answer[:200])


def test_every_body_is_capped_before_it_is_read_whole(
    tmp_path: Path, running: list[Running]
) -> None:
    base = http_server(running, tmp_path)
    netloc = base.removeprefix("http://")
    announced = raw_request(base, f"POST /jobs/x/cancel HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\n"
                                  "Content-Length: 1000000000\r\n")  # fmt: skip
    assert announced.startswith("HTTP/1.1 413") and "at most 65536 bytes" in announced
    # One byte over the cap, streamed without a length (and not finished: the server
    # must answer from what it read so far).
    chunked = b"%x\r\n%s\r\n" % (65537, b"x" * 65537)
    with open_store(f"sqlite:///{tmp_path}/h.db") as store:
        Runtime(store).start(builtin_jobs.approval, "Big?", id="big")
        until(lambda: (t := Runtime(store).tasks.get("big")) and t.waiting_on, what="the wait")
    form_token = Signer(SECRET.encode()).form_token("approve:big.0")
    link = f"/approve/{Signer(SECRET.encode()).approval_token('big.0')}?form_token={form_token}"
    streamed = raw_request(base, f"POST {link} HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\n"
                                 "Content-Type: application/x-www-form-urlencoded\r\n"
                                 "Transfer-Encoding: chunked\r\n", chunked)  # fmt: skip
    assert streamed.startswith("HTTP/1.1 413"), streamed[:200]


def test_a_client_that_goes_away_mid_body_costs_one_log_line(
    tmp_path: Path, running: list[Running]
) -> None:
    base = http_server(running, tmp_path)
    netloc = base.removeprefix("http://")
    with open_store(f"sqlite:///{tmp_path}/h.db") as store:
        Runtime(store).start(builtin_jobs.approval, "Stall?", id="stall")
        until(lambda: (t := Runtime(store).tasks.get("stall")) and t.waiting_on, what="the wait")
    signer = Signer(SECRET.encode())
    link = f"/approve/{signer.approval_token('stall.0')}?form_token={signer.form_token('approve:stall.0')}"
    for _ in range(20):
        raw_request(base, f"POST {link} HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\nContent-Length: 1000\r\n"
                          "Content-Type: application/x-www-form-urlencoded\r\n",
                    b"decision=app", close_after=True)  # fmt: skip
    mcp = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    for _ in range(20):  # and to the MCP endpoint, whose own library logged a traceback
        raw_request(base, f"POST /mcp HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\n"
                          "Content-Length: 1000\r\n" + "".join(f"{k}: {v}\r\n" for k, v in mcp.items()),
                    b'{"jsonrpc":', close_after=True)  # fmt: skip
    log = running[0].log
    until(lambda: log.read_text().count("went away") == 40, what="40 log lines")
    assert httpx.get(base + "/").status_code == 200  # still serving
    running[0].proc.terminate()
    running[0].proc.wait(20)
    text = log.read_text()
    assert "Traceback" not in text and "ERROR" not in text and text.count("went away") == 40
    assert len(text.splitlines()) < 40 + 10, text  # one line each, little else
    token = signer.approval_token("stall.0")
    assert token not in text  # the link's token is its credential: never logged
    with open_store(f"sqlite:///{tmp_path}/h.db") as store:
        assert store.get("stall.0").pending  # nothing was decided


# -- host names ---------------------------------------------------------------------------


def test_the_public_url_and_allowed_hosts_are_answered_and_links_use_the_public_url(
    tmp_path: Path, running: list[Running]
) -> None:
    base = http_server(running, tmp_path, "--public-url", "https://agents.example.org",
                       "--allowed-host", "proxy.internal:8080")  # fmt: skip
    assert base == "https://agents.example.org"
    port = re.search(r"over HTTP at http://127\.0\.0\.1:(\d+)/mcp", running[0].log.read_text())
    assert port is not None
    local = f"http://127.0.0.1:{port[1]}"
    for host, status in (("agents.example.org", 200), ("agents.example.org:443", 200),
                         ("proxy.internal:8080", 200), ("evil.example", 421),
                         (f"127.0.0.1:{port[1]}", 200)):  # fmt: skip
        assert httpx.get(local + "/", headers={"Host": host}).status_code == status, host
    with open_store(f"sqlite:///{tmp_path}/h.db") as store:
        Runtime(store).start(builtin_jobs.approval, "Public?", id="pub")
        until(lambda: (t := Runtime(store).tasks.get("pub")) and t.waiting_on, what="the wait")
    shown = subprocess.run(
        [AGENT_TOOLS, "jobs", "show", "pub", "--json",
         "--db", str(tmp_path / "h.db"), "--public-url", "https://agents.example.org"],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert json.loads(shown.stdout)["waiting_for"]["link"].startswith(
        "https://agents.example.org/approve/"
    )


def test_ipv6_loopback_is_served(tmp_path: Path, running: list[Running]) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    base = http_server(running, tmp_path, "--host", "::1")
    assert base.startswith("http://[::1]:")
    assert httpx.get(base + "/").status_code == 200
    assert "<table" in httpx.get(base + "/").text


# -- the database file --------------------------------------------------------------------


def test_a_new_sqlite_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "private.db"
    result = subprocess.run(command(db, "--no-ui"), cwd=ROOT, env=env(), capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for path in tmp_path.glob("private.db*"):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_connections_to_the_listener_send_without_delay() -> None:
    """Accepted connections get TCP_NODELAY (asyncio sets it only on a socket made as
    IPPROTO_TCP); without it each streamed MCP answer waited ~40 ms on Nagle."""
    import asyncio

    from agent_tools.http import bind

    async def accepted_nodelay() -> int:
        listener = bind("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            value = await asyncio.wait_for(seen, 30)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0


# -- the link-signing key -----------------------------------------------------------------


def test_processes_starting_at_once_share_one_whole_signing_key(tmp_path: Path) -> None:
    # Each reads the key the moment the first one makes it: none may see it empty (an
    # empty key would make every approval link forgeable).
    script = "from agent_tools.links import load_key; print(load_key().decode())"
    environment = {k: v for k, v in os.environ.items() if k != "AGENT_TOOLS_SECRET"}
    environment["XDG_DATA_HOME"] = str(tmp_path)
    command = [sys.executable, "-c", script]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [
        subprocess.Popen(command, env=environment, cwd=ROOT, text=True, **pipes) for _ in range(8)
    ]
    keys = set()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        keys.add(out.strip())
    assert len(keys) == 1 and len(keys.pop()) == 64
    key_file = tmp_path / "agent-tools" / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in key_file.parent.iterdir() if p.name.startswith(".secret")] == []


def test_an_empty_signing_key_file_is_refused_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_tools.config import ConfigError
    from agent_tools.links import load_key

    monkeypatch.delenv("AGENT_TOOLS_SECRET", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    (tmp_path / "agent-tools").mkdir()
    (tmp_path / "agent-tools" / "secret.key").write_text("")
    with pytest.raises(ConfigError, match="is empty or damaged; delete it"):
        load_key()


def test_json_logs_are_json_to_the_last_line_web_servers_included(
    tmp_path: Path, running: list[Running]
) -> None:
    log = tmp_path / "json.log"
    args = [AGENT_TOOLS, "--log-format", "json", "serve", "--db", str(tmp_path / "j.db"),
            "--http", "--port", "0"]  # fmt: skip
    start(running, args, log)
    port = until(lambda: re.search(r"over HTTP at http://127\.0\.0\.1:(\d+)/mcp",
                                   log.read_text() if log.exists() else ""), what="started")  # fmt: skip
    base = f"http://127.0.0.1:{port[1]}"
    raw_request(base, "NOT HTTP AT ALL\r\n", close_after=True)  # uvicorn's own warning
    until(lambda: "Invalid HTTP request" in log.read_text(), what="the web server's warning")
    running[0].proc.terminate()
    running[0].proc.wait(20)
    lines = log.read_text().splitlines()
    assert lines and all(json.loads(line)["message"] for line in lines), lines
