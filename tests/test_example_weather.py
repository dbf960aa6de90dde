"""examples/weather: the Open-Meteo archive mocked with respx (the outside world)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from examples.fakes import FakeOpenMeteo, archive_days
from examples.weather import jobs as weather
from promises import Runtime, SqlStore, Worker, open_store
from promises.codec import StoredError
from tests.conftest import FakeClock
from tests.waiting import eventually

pytestmark = pytest.mark.anyio
LISBON = {"name": "Lisbon", "latitude": 38.72, "longitude": -9.14}
OSLO = {"name": "Oslo", "latitude": 59.91, "longitude": 10.75}


def archive(request: httpx.Request) -> httpx.Response:
    """A month of weather whose values depend on the place (the examples' stand-in)."""
    params = request.url.params
    return httpx.Response(200, json=archive_days(float(params["latitude"]), params["start_date"]))


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[SqlStore, FakeClock, Worker]]:
    clock = FakeClock()
    with open_store(f"sqlite:///{tmp_path}/weather.db", clock=clock, poll_interval=0.05) as store:
        worker = Worker(Runtime(store), poll_interval=0.05)
        task = asyncio.create_task(worker.run())
        yield store, clock, worker
        worker.stop()
        await task


async def settle(store: SqlStore, clock: FakeClock, worker: Worker, job_id: str) -> Any:
    """Run until the job settles, moving the injected clock past retry backoffs."""

    def settled() -> Any:
        job = store.get(job_id)
        if job.pending:
            clock.advance(5_000)
            worker.wake()
            return None
        return job

    return await eventually(settled, what=f"{job_id} settles")


async def test_one_step_per_location_month_and_a_summary(
    running: tuple[SqlStore, FakeClock, Worker],
) -> None:
    store, clock, worker = running
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(weather.ARCHIVE_URL).mock(side_effect=archive)
        Runtime(store).start(
            weather.gather_weather, [LISBON, OSLO], ["2026-01", "2026-02"], id="w1"
        )
        result = Runtime.result(await settle(store, clock, worker, "w1"))
    assert route.call_count == 4
    assert result["summary"] == {
        "Lisbon": {"mean_max_c": 20.0, "precipitation_mm": 58.0},
        "Oslo": {"mean_max_c": 5.0, "precipitation_mm": 116.0},
    }
    assert [(m["location"], m["month"], m["days"]) for m in result["months"]] == [
        ("Lisbon", "2026-01", 30),
        ("Lisbon", "2026-02", 28),
        ("Oslo", "2026-01", 30),
        ("Oslo", "2026-02", 28),
    ]
    sent = {
        (r.request.url.params["start_date"], r.request.url.params["end_date"]) for r in route.calls
    }
    assert ("2026-02-01", "2026-02-28") in sent


async def test_rate_limits_and_server_errors_are_retried_then_succeed(
    running: tuple[SqlStore, FakeClock, Worker],
) -> None:
    store, clock, worker = running
    answers = iter([httpx.Response(429), httpx.Response(503), httpx.Response(502)])

    def flaky(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or archive(request)

    with respx.mock() as mock:
        route = mock.get(weather.ARCHIVE_URL).mock(side_effect=flaky)
        Runtime(store).start(weather.gather_weather, [LISBON], ["2026-03"], id="w2")
        result = Runtime.result(await settle(store, clock, worker, "w2"))
    assert route.call_count == 4  # three transient failures, then the answer
    assert result["summary"]["Lisbon"]["mean_max_c"] == 20.0
    headers = {call.request.headers["X-Request-Id"] for call in route.calls}
    assert headers == {"w2.0"}  # the step id is stable across retries: usable as an idempotency key


async def test_a_malformed_body_fails_the_job_clearly_without_retrying(
    running: tuple[SqlStore, FakeClock, Worker],
) -> None:
    store, clock, worker = running
    with respx.mock() as mock:
        route = mock.get(weather.ARCHIVE_URL).mock(
            return_value=httpx.Response(200, json={"hourly": {}})
        )
        Runtime(store).start(weather.gather_weather, [LISBON], ["2026-03"], id="w3")
        job = await settle(store, clock, worker, "w3")
    with pytest.raises(StoredError) as failed:
        Runtime.result(job)
    assert failed.value.type == "BadResponse"
    assert "malformed Open-Meteo response for Lisbon 2026-03" in failed.value.message
    assert route.call_count == 1


def test_bad_arguments_are_refused_at_start(tmp_path: Path) -> None:
    from promises import InvalidArgument

    with (
        open_store(f"sqlite:///{tmp_path}/w.db") as store,
        pytest.raises(InvalidArgument, match="latitude"),
    ):
        Runtime(store).start(weather.gather_weather, [{"name": "Nowhere"}], ["2026-01"])


@pytest.mark.slow
def test_the_story_script_kills_the_server_mid_way_and_rejoins_the_result(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    fake = FakeOpenMeteo(slow={"59.": 3.0}, delay=0.1)  # Oslo is slow: the kill interrupts it
    command = [sys.executable, "examples/weather/story.py", "--db", str(tmp_path / "story.db")]
    story = subprocess.Popen(
        command,
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "OPEN_METEO_ARCHIVE_URL": fake.url},
    )
    lines, killed_at = [], 0.0
    try:
        assert story.stdout is not None
        for line in story.stdout:
            lines.append(line.strip())
            if line.startswith("server killed"):
                killed_at = time.time()
        assert story.wait(timeout=180) == 0
    finally:
        fake.close()
        if story.stdout is not None:
            story.stdout.close()
    assert lines[1] == "server killed mid-way (SIGKILL)" and lines[2].startswith("server restarted")
    assert lines[-1].startswith("completed: Lisbon 20.0 °C mean high, 118.0 mm rain; ")
    # Leave out the story's reachability check (latitude 0).
    fake.requests = [r for r in fake.requests if r[0] != "0"]
    fake.answered = {k: at for k, at in fake.answered.items() if k[0] != "0"}
    assert len(set(fake.requests)) == 12  # every location-month fetched
    counts = {key: fake.requests.count(key) for key in set(fake.requests)}
    # The steps the killed server had recorded, from the records themselves (not from
    # when the archive answered: a step answered just before the kill may not have been
    # recorded yet, and then rightly runs again).
    from promises import STEP_TAG, open_store
    from promises.context import ARGS_HEADER

    job_id = lines[0].split()[1]
    with open_store(f"sqlite:///{tmp_path / 'story.db'}") as store:
        steps = store.search(f"{job_id}.*", limit=100).promises
    recorded_before_kill = []
    for step in steps:
        if step.param.headers.get(STEP_TAG, "").endswith("fetch_month") and (
            step.settled_at is not None and step.settled_at / 1000 < killed_at
        ):
            location, month = json.loads(f"[{step.param.headers[ARGS_HEADER]}]")
            recorded_before_kill.append((str(location["latitude"]), f"{month}-01"))
    assert all(counts[key] == 1 for key in recorded_before_kill)  # never fetched again
    assert all(count <= 2 for count in counts.values())  # an interrupted one at most once more


class Foreign:
    """Another program's HTTP server on a port: it answers every request (200, JSON)
    and keeps what it was asked. ``port=None``: a free one."""

    def __init__(self, port: int | None = None) -> None:
        import http.server
        import threading

        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                body = b'{"jsonrpc": "2.0", "id": 1, "result": {}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def hold_the_old_default_port() -> Foreign | None:
    """A foreign server on 8766, the story's old fixed port (None if something else
    holds it already: a foreign server too, as far as the story is concerned)."""
    try:
        return Foreign(8766)
    except OSError:
        return None


@pytest.mark.slow
def test_the_offline_weather_story_is_one_command_and_tells_its_story(tmp_path: Path) -> None:
    import subprocess
    import sys

    foreign = hold_the_old_default_port()
    try:
        story = subprocess.run(
            [sys.executable, "examples/weather/story.py", "--offline",
             "--db", str(tmp_path / "offline.db")],
            cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    finally:
        if foreign is not None:
            foreign.close()
    assert story.returncode == 0, story.stderr
    lines = story.stdout.splitlines()
    assert lines[0].startswith("offline: a local Open-Meteo stand-in at http://127.0.0.1:")
    assert lines[1].startswith("started weather.gather-") and "on http://127.0.0.1:" in lines[1]
    assert ":8766/" not in lines[1]  # a free port, not a fixed one someone else may hold
    assert lines[2] == "server killed mid-way (SIGKILL)"
    assert "; Oslo 5.0 °C mean high, 236.0 mm rain (4 months each)" in lines[-1]
    assert "[server 1] " in story.stderr and "[server 2] " in story.stderr  # the log is shown
    assert "agent-tools serving MCP over HTTP" in story.stderr
    assert foreign is None or foreign.requests == []  # never talked to the other server


def test_the_story_refuses_a_port_another_server_holds_and_never_talks_to_it(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    foreign = Foreign()
    try:
        story = subprocess.run(
            [sys.executable, "examples/weather/story.py", "--offline", "--port",
             str(foreign.port), "--db", str(tmp_path / "busy.db")],
            cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        foreign.close()
    assert story.returncode == 1
    assert f"the server did not start on port {foreign.port}" in story.stderr
    assert f"port {foreign.port} on 127.0.0.1 is already in use" in story.stderr  # its log
    assert foreign.requests == []


def test_without_the_network_the_story_says_so_at_once_and_how_to_run_offline(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    from tests.test_mcp_transports import free_port

    closed = f"http://127.0.0.1:{free_port()}/v1/archive"  # nothing listens there
    story = subprocess.run(
        [sys.executable, "examples/weather/story.py", "--db", str(tmp_path / "x.db")],
        cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=60,
        env={**os.environ, "OPEN_METEO_ARCHIVE_URL": closed},
    )  # fmt: skip
    assert story.returncode == 1
    assert f"cannot reach the Open-Meteo archive at {closed}" in story.stderr
    assert "python examples/weather/story.py --offline" in story.stderr
