"""Local stand-ins for the outside world, so every example runs offline: the Open-Meteo
archive and an OpenAI-compatible chat endpoint, each a small HTTP server on loopback.
The examples' demos use them with ``--offline``; the tests use them too.

    with FakeOpenMeteo() as archive:      # archive.url -> OPEN_METEO_ARCHIVE_URL
        ...
    with FakeOpenAI(reminder_script) as model:   # model.url -> OPENAI_BASE_URL
        ...

The fake model is a script: a function from the conversation so far to the next
assistant message. It answers from the conversation (not from a call count), so a
restarted worker continues the same script. Every request is logged (``requests``).
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

Script = Callable[[list[dict[str, Any]]], dict[str, Any]]


class _Server:
    """A threaded HTTP server on a free loopback port, stopped on exit."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def archive_days(latitude: float, start_date: str) -> dict[str, Any]:
    """A month of daily weather whose values depend on the place, like the real API's."""
    warm = latitude < 50
    days = 28 if start_date.endswith("02-01") else 30
    return {"daily": {
        "time": [f"d{i}" for i in range(days)],
        "temperature_2m_max": [20.0 if warm else 5.0] * days,
        "temperature_2m_min": [12.0 if warm else -1.0] * days,
        "precipitation_sum": [1.0 if warm else 2.0] * days,
    }}  # fmt: skip


class FakeOpenMeteo(_Server):
    """The Open-Meteo archive API (``/v1/archive``). ``slow`` maps a latitude prefix to
    seconds of delay, so a story can be interrupted mid-way."""

    def __init__(self, slow: dict[str, float] | None = None, delay: float = 0.05) -> None:
        self.requests: list[tuple[str, str]] = []
        self.answered: dict[tuple[str, str], float] = {}  # first answer's wall-clock time
        outer, slow = self, slow or {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                key = (query["latitude"], query["start_date"])
                outer.requests.append(key)
                pause = next((s for p, s in slow.items() if query["latitude"].startswith(p)), delay)
                time.sleep(pause)
                body = json.dumps(archive_days(float(query["latitude"]), query["start_date"]))
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(body.encode())
                except (BrokenPipeError, ConnectionResetError):
                    return  # the asking server was killed mid-request: part of the story
                outer.answered.setdefault(key, time.time())

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}/v1/archive"


def chat_completion(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completion response body carrying one assistant ``message``."""
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {"id": "cmpl", "object": "chat.completion", "created": 0, "model": "fake-model",
            "choices": [{"index": 0, "finish_reason": finish, "message": message}]}  # fmt: skip


def tool_call(name: str, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function",
         "function": {"name": name, "arguments": json.dumps(arguments)}}]}  # fmt: skip


class FakeOpenAI(_Server):
    """``POST /v1/chat/completions`` answered by ``script``; ``requests`` logs each call
    (the number of messages it carried)."""

    def __init__(self, script: Script) -> None:
        self.requests: list[int] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                outer.requests.append(len(body["messages"]))
                answer = json.dumps(chat_completion(script(body["messages"]))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}/v1"


def reminder_script(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The reminder assistant's model: ask the time, sleep until the reminder is due
    ("in N seconds|minutes", else 09:00 UTC the next day), deliver it, answer."""
    request = next(m["content"] for m in messages if m["role"] == "user")
    last = messages[-1]
    if last["role"] == "user":
        return tool_call("current_time", {}, "c1")
    result = json.loads(last["content"])
    if "now" in result:
        now = datetime.fromisoformat(result["now"])
        match = re.search(r"in (\d+) (second|minute)s?", request)
        if match:
            due = now + timedelta(**{match[2] + "s": int(match[1])})
        else:
            due = (now + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
        until = due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return tool_call("schedule", {"until_utc": until}, "c2")
    if "woke_at" in result:
        what = re.sub(r"^.*?\bto\b\s*", "", request).rstrip(".") or request
        return tool_call("reminder", {"message": what[:1].upper() + what[1:]}, "c3")
    delivered = result.get("message", "your reminder")
    return {"role": "assistant", "content": f"Done: I reminded you: {delivered}."}


def agent_loop_script(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """A model using agent-tools through MCP: start a short sleep job, await it by the id
    the server returned, then answer from its result."""
    last = messages[-1]
    if last["role"] == "user":
        return tool_call("start_job", {"kind": "sleep", "args": {"seconds": 0.2}},
                         f"c{len(messages)}")  # fmt: skip
    result: dict[str, Any] = json.loads(last["content"])
    if "job_id" in result:
        return tool_call("await_result", {"job_ids": [result["job_id"]], "timeout_s": 20},
                         f"c{len(messages)}")  # fmt: skip
    done = result["done"][0]
    return {
        "role": "assistant",
        "content": f"{done['job_id']} is {done['status']}: {done['result']}",
    }
