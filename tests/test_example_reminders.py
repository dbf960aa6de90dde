"""examples/reminders: the agent loop as a durable job, the model scripted with respx,
the clock injected, and a real SIGKILL mid-sleep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from examples.reminders import agent
from promises import TIMER_TAG, Runtime, open_store
from tests.reminders_harness import WAKE_AT, FileClock, chat_completion
from tests.waiting import until

ROOT = Path(__file__).parent.parent
START = int(datetime(2027, 1, 15, 20, 30, tzinfo=UTC).timestamp() * 1000)  # "tomorrow at 9"
WAKE_MS = int(datetime.fromisoformat(WAKE_AT.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.slow
def test_remind_me_tomorrow_at_9_survives_a_crash_mid_sleep(tmp_path: Path) -> None:
    db, clock_file, model_log, outbox = (
        tmp_path / n for n in ("r.db", "clock", "model.log", "outbox.jsonl")
    )
    clock_file.write_text(str(START))
    env = {**os.environ, "REMINDERS_OUTBOX": str(outbox)}
    command = [
        sys.executable,
        "-m",
        "tests.reminders_harness",
        str(db),
        str(clock_file),
        str(model_log),
    ]

    with open_store(f"sqlite:///{db}", clock=FileClock(clock_file)) as store:
        Runtime(store).start(agent.assistant, "Remind me tomorrow at 9 to call Ana", id="rem")
        first = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            timer = until(
                lambda: store.search("rem.*", tags={TIMER_TAG: "true"}).promises,
                what="the assistant's timer",
            )[0]
            assert timer.timeout_at == WAKE_MS  # the right sleep: 09:00 UTC the next day
            time.sleep(0.3)  # a window for a wrong early wake-up: nothing to wait for
            assert store.get("rem").pending and not outbox.exists()  # asleep, nothing delivered yet
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()

        clock_file.write_text(str(WAKE_MS + 1_000))  # the night passes while the server is down
        second = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            until(lambda: not store.get("rem").pending, what="the reminder job settles")
        finally:
            second.terminate()
            second.wait()
        result = Runtime.result(store.get("rem"))

    assert result == {"answer": "Done: I reminded you: Call Ana.", "model_calls": 4}
    calls = [json.loads(line) for line in model_log.read_text().splitlines()]
    assert [c["messages"] for c in calls] == [2, 4, 6, 8]  # four model calls, none repeated
    assert {c["pid"] for c in calls[:2]} == {first.pid} and {c["pid"] for c in calls[2:]} == {
        second.pid
    }
    deliveries = [json.loads(line) for line in outbox.read_text().splitlines()]
    assert len(deliveries) == 1 and deliveries[0]["message"] == "Call Ana"
    assert deliveries[0]["at"] >= "2027-01-16T09:00:00"  # delivered at its time, not before


def test_a_schedule_without_a_time_zone_fails_the_job_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import respx

    from promises import Worker
    from promises.codec import StoredError
    from tests.reminders_harness import BASE_URL

    def naive(request: object) -> object:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {
                        "name": "schedule",
                        "arguments": json.dumps({"until_utc": "2027-01-16T09:00:00"}),
                    },
                }
            ],
        }
        return chat_completion(message)

    async def run() -> object:
        with (
            respx.mock() as mock,
            open_store(f"sqlite:///{tmp_path}/n.db", poll_interval=0.05) as store,
        ):
            mock.post(f"{BASE_URL}/chat/completions").mock(side_effect=naive)
            worker = Worker(Runtime(store), poll_interval=0.05)
            task = asyncio.create_task(worker.run())
            Runtime(store).start(agent.assistant, "remind me at nine", id="naive")
            job = await store.wait("naive", timeout=20)
            worker.stop()
            await task
            return job

    monkeypatch.setenv("OPENAI_BASE_URL", BASE_URL)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    job = asyncio.run(run())
    with pytest.raises(StoredError, match=r"schedule needs a time zone \(Z\)"):
        Runtime.result(job)  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_offline_reminder_demo_is_one_command_and_survives_a_restart() -> None:
    demo = subprocess.run(
        [sys.executable, "examples/reminders/demo.py", "--request", "Remind me in 3 seconds to stretch"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.splitlines()
    assert lines[0].startswith("offline: a scripted stand-in for the model at http://127.0.0.1:")
    assert lines[3] == "worker killed (SIGKILL) while the assistant sleeps"
    assert [line for line in lines if line.startswith("delivered: ")] == [
        line for line in lines if line.startswith("delivered: 'Stretch' at ")
    ] and len([line for line in lines if line.startswith("delivered")]) == 1
    assert lines[-2] == "assistant: Done: I reminded you: Stretch."
    assert lines[-1] == "4 model turns; the model was called 4 times, none repeated"
    assert "[worker 1] " in demo.stderr and "[worker 2] " in demo.stderr  # their logs, marked


class Refusing:
    """An OpenAI-compatible endpoint that refuses every key (401)."""

    def __init__(self) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = b'{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("endpoint", "cause"),
    [("unreachable", "cannot reach the model at {url}"),
     ("refusing", "the model endpoint refused the request")],
)  # fmt: skip
def test_the_demo_with_a_model_it_cannot_use_says_why_and_what_to_set_and_stops(
    endpoint: str, cause: str
) -> None:
    from tests.test_mcp_transports import free_port

    refusing = Refusing() if endpoint == "refusing" else None
    url = refusing.url if refusing else f"http://127.0.0.1:{free_port()}/v1"  # nothing listens
    env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-wrong"}
    try:
        # Well before the 120 s the demo used to wait in silence for the assistant to sleep.
        demo = subprocess.run([sys.executable, "examples/reminders/demo.py", "--model"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=100)  # fmt: skip
    finally:
        if refusing is not None:
            refusing.close()
    assert demo.returncode == 1, demo.stderr
    said = demo.stderr.splitlines()
    why = next(line for line in said if line.startswith("the assistant could not use the model: "))
    assert cause.format(url=url) in why
    assert "set OPENAI_API_KEY" in why and "python examples/reminders/demo.py" in why  # the hint
    assert said[-1].startswith("stopped the demo")
    assert any(line.startswith("[worker 1] ") and "WARNING" in line for line in said)  # its log


def test_an_unreachable_model_is_an_error_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_mcp_transports import free_port

    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    monkeypatch.setenv("OPENAI_BASE_URL", nowhere)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with pytest.raises(agent.ModelUnreachable) as failed:
        agent.call_model([{"role": "user", "content": "remind me"}])
    message = str(failed.value)
    assert f"cannot reach the model at {nowhere}" in message
    assert "set OPENAI_API_KEY" in message and "python examples/reminders/demo.py" in message
    assert not isinstance(failed.value, agent.NonRetryableError)  # the step retries it
