"""OpenTelemetry for jobs, recorded with the SDK's in-memory exporters, and structured
logs. The observer is driven through the calls the runtime's hook makes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agent_tools.logs import JsonFormatter
from agent_tools.telemetry import OtelObserver, attach, job_trace_context
from promises import Constant, Context, Runtime, Worker, durable, open_store
from tests.waiting import eventually

ROOT = Path(__file__).parent.parent


class Recorded:
    def __init__(self, ready: list[int] | None = None) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[self.reader])
        depth = (lambda: ready[0]) if ready is not None else None
        self.observer = OtelObserver(tracer_provider, meter_provider, ready_count=depth)

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:  # a histogram
                            value = (point.count, point.sum)  # type: ignore[attr-defined]
                        found.setdefault(metric.name, []).append(
                            (dict(point.attributes or {}), value)
                        )
        return found


def test_a_job_that_fails_a_step_sleeps_and_resumes_is_one_trace_with_runs_steps_and_waits() -> (
    None
):
    first, second = Recorded(), Recorded()  # two processes: the job resumed elsewhere
    o = first.observer
    o.job_started("gather-1", "weather.gather")
    o.run_started("gather-1", "weather.gather", 1, None)
    o.step_started("gather-1", "gather-1.0", "fetch_month", 1)
    o.step_ended("gather-1", "gather-1.0", "fetch_month", 1, True, None)
    o.step_started("gather-1", "gather-1.1", "fetch_month", 1)
    o.step_ended("gather-1", "gather-1.1", "fetch_month", 1, False, "TransientHTTPError")
    o.waiting("gather-1", "weather.gather", None, 1_800_000_002_000)  # the retry's backoff
    o.run_ended("gather-1", "weather.gather", "suspended", None)
    o = second.observer
    o.run_started("gather-1", "weather.gather", 2, 37)
    o.step_started("gather-1", "gather-1.1", "fetch_month", 2)
    o.step_ended("gather-1", "gather-1.1", "fetch_month", 2, True, None)
    o.waiting("gather-1", "weather.gather", "gather-1.2", 1_800_000_060_000)  # a sleep
    o.run_ended("gather-1", "weather.gather", "completed", None)

    spans = [*first.spans.get_finished_spans(), *second.spans.get_finished_spans()]
    assert len({s.context.trace_id for s in spans}) == 1  # one trace for the whole job
    expected = job_trace_context("gather-1")
    from opentelemetry import trace

    assert spans[0].context.trace_id == trace.get_current_span(expected).get_span_context().trace_id
    runs = [s for s in spans if s.name == "job weather.gather"]
    steps = [s for s in spans if s.name == "step fetch_month"]
    assert [r.attributes["job.attempt"] for r in runs] == [1, 2]
    assert [r.attributes["job.outcome"] for r in runs] == ["suspended", "completed"]
    assert runs[1].attributes["job.woke_after_ms"] == 37
    assert [(s.attributes["step.id"], s.attributes["step.attempt"]) for s in steps] == [
        ("gather-1.0", 1), ("gather-1.1", 1), ("gather-1.1", 2)]  # fmt: skip
    assert all(s.parent is not None and s.parent.span_id in {r.context.span_id for r in runs}
               for s in steps)  # fmt: skip
    assert steps[1].status.status_code == StatusCode.ERROR
    assert steps[1].attributes["error.type"] == "TransientHTTPError"
    assert [e.name for e in runs[0].events] == ["waiting"]
    assert [e.name for e in runs[1].events] == ["retry", "waiting"]
    assert runs[1].events[1].attributes["wait.on"] == "gather-1.2"

    assert first.metrics()["agent_tools.jobs.started"] == [({"kind": "weather.gather"}, 1)]
    assert "agent_tools.jobs.started" not in second.metrics()  # a resumed run is no new job
    # Settles are counted where they are committed (the store's hook), not by runs.
    assert "agent_tools.jobs.settled" not in second.metrics()
    assert first.metrics()["agent_tools.steps.failed"] == [({"step": "fetch_month"}, 1)]
    assert second.metrics()["agent_tools.jobs.wake_latency"] == [
        ({"kind": "weather.gather"}, (1, 37))
    ]
    assert first.metrics()["agent_tools.runs"] == [
        ({"kind": "weather.gather", "outcome": "suspended"}, 1)]  # fmt: skip


def test_a_failed_job_marks_its_run_and_counts_as_failed() -> None:
    recorded = Recorded()
    o = recorded.observer
    o.run_started("f-1", "tests.fails", 1, 5)
    o.step_started("f-1", "f-1.0", "explode", 1)
    o.step_ended("f-1", "f-1.0", "explode", 1, False, "Broken")
    o.run_ended("f-1", "tests.fails", "failed", "Broken")
    (step, run) = recorded.spans.get_finished_spans()
    assert (
        step.status.status_code == StatusCode.ERROR and step.parent.span_id == run.context.span_id
    )  # type: ignore[union-attr]
    assert run.status.status_code == StatusCode.ERROR and run.attributes["error.type"] == "Broken"
    assert recorded.metrics()["agent_tools.runs"] == [
        ({"kind": "tests.fails", "outcome": "failed"}, 1)]  # fmt: skip


def test_the_ready_queue_depth_is_a_gauge_read_when_metrics_are_collected() -> None:
    depth = [3]
    recorded = Recorded(ready=depth)
    assert recorded.metrics()["agent_tools.jobs.ready"] == [({}, 3)]
    depth[0] = 0
    assert recorded.metrics()["agent_tools.jobs.ready"] == [({}, 0)]


FLAKY_CALLS: list[int] = []


def flaky_fetch(month: str) -> str:
    FLAKY_CALLS.append(1)
    if len(FLAKY_CALLS) == 1:
        raise ConnectionError("the archive hung up")
    return f"rows of {month}"


@durable(name="telemetry.gather", retry=Constant(every=0.01, max_attempts=3))
async def gather(ctx: Context, month: str) -> str:
    rows = await ctx.run(flaky_fetch, month)
    await ctx.sleep(0.05)
    return str(rows)


def test_a_real_worker_reports_runs_steps_retries_and_waits_through_the_hook(
    tmp_path: Path,
) -> None:
    import asyncio

    recorded = Recorded()
    FLAKY_CALLS.clear()

    async def run() -> None:
        with open_store(f"sqlite:///{tmp_path}/t.db", poll_interval=0.05) as store:
            runtime = Runtime(store)
            attach(runtime, recorded.observer)
            worker = Worker(runtime, poll_interval=0.05)
            task = asyncio.create_task(worker.run())
            runtime.start(gather, "2025-01", id="traced")
            assert recorded.metrics()["agent_tools.jobs.ready"] == [({}, 1)]  # before a claim
            done = await store.wait("traced", timeout=30)
            worker.stop()
            await task
            assert done.state == "resolved"
            assert recorded.metrics()["agent_tools.jobs.ready"] == [({}, 0)]  # nothing queued

    asyncio.run(run())
    spans = recorded.spans.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1
    runs = [s for s in spans if s.name == "job telemetry.gather"]
    steps = [s for s in spans if s.name.startswith("step ")]
    assert runs[-1].attributes["job.outcome"] == "completed"
    assert {r.attributes["job.outcome"] for r in runs[:-1]} == {"suspended"}  # retry, sleep
    assert [s.attributes["step.attempt"] for s in steps] == [1, 2]
    assert steps[0].status.status_code == StatusCode.ERROR
    assert any(e.name == "waiting" for r in runs for e in r.events)
    metrics = recorded.metrics()
    assert metrics["agent_tools.jobs.started"] == [({"kind": "telemetry.gather"}, 1)]
    assert metrics["agent_tools.jobs.settled"] == [
        ({"kind": "telemetry.gather", "status": "completed"}, 1)
    ]
    assert metrics["agent_tools.steps.failed"] == [({"step": f"{__name__}:flaky_fetch"}, 1)]
    assert "agent_tools.jobs.ready" not in metrics  # the store is closed: no reading, no error


@durable(name="telemetry.quick")
async def quick(ctx: Context) -> str:
    return "done"


@durable(name="telemetry.nap")
async def nap(ctx: Context) -> None:
    await ctx.sleep(3600)


@pytest.mark.parametrize(("job", "outcome"), [(quick, "completed"), (nap, "suspended")])
def test_a_run_stopped_while_its_last_write_commits_still_reports_how_it_ended(
    tmp_path: Path, job: Any, outcome: str
) -> None:
    # A worker shutting down cancels its runs. A run whose last write (its result, or
    # its going to sleep) is on its way commits regardless: its span must still end,
    # with what was committed, and the stop must still reach the run.
    import asyncio

    recorded = Recorded()
    stopped: list[asyncio.Task[Any]] = []

    async def run() -> None:
        with open_store(f"sqlite:///{tmp_path}/t.db", poll_interval=0.05) as store:
            runtime = Runtime(store)
            attach(runtime, recorded.observer)
            worker = Worker(runtime, poll_interval=0.05)
            loop = asyncio.get_running_loop()

            def stop_runs() -> None:
                stopped.extend(task for _, task in worker.running.values())
                for task in stopped:
                    task.cancel()

            # The run's last write: stop the run while it is being committed.
            owner, name = (store, "settle_tx") if outcome == "completed" else (
                runtime.tasks, "wait_tx")  # fmt: skip
            last_write = getattr(owner, name)

            def stopping(*args: Any, **kwargs: Any) -> Any:
                loop.call_soon_threadsafe(stop_runs)  # on the writer's thread, mid-commit
                return last_write(*args, **kwargs)

            setattr(owner, name, stopping)
            task = asyncio.create_task(worker.run())
            await eventually(lambda: runtime.local_worker is worker, what="the worker runs")
            runtime.start(job, id="stopped")
            await eventually(lambda: stopped and all(t.done() for t in stopped),
                             what="the run was stopped")  # fmt: skip
            worker.stop()
            await task
            assert (await store.aget("stopped")).pending == (outcome == "suspended")

    asyncio.run(run())
    assert [t.cancelled() for t in stopped] == [True]
    (span,) = [s for s in recorded.spans.get_finished_spans() if s.name.startswith("job ")]
    assert span.attributes is not None and span.attributes["job.outcome"] == outcome
    assert recorded.metrics()["agent_tools.runs"] == [
        ({"kind": job.name, "outcome": outcome}, 1)]  # fmt: skip


def test_a_run_whose_lease_was_taken_reports_it_lost_at_its_end(tmp_path: Path) -> None:
    # Its end is refused (fenced: another worker holds the job now); the run says so
    # and ends quietly, for that worker's run to decide.
    import asyncio

    from promises.tasks import Owner
    from tests.conftest import FakeClock

    recorded, clock = Recorded(), FakeClock()

    async def run() -> None:
        with open_store(f"sqlite:///{tmp_path}/t.db", clock=clock) as store:
            runtime = Runtime(store)
            attach(runtime, recorded.observer)
            runtime.start(quick, id="taken")
            ((stale, job, _),) = await runtime.tasks.claim(Owner.here(), [quick.name], 1, 1000)
            clock.advance(1000)
            ((fresh, _, _),) = await runtime.tasks.claim(Owner.here(), [quick.name], 1, 1000)
            assert fresh.counter == stale.counter + 1
            await runtime.execute(stale, job)
            assert (await store.aget("taken")).pending

    asyncio.run(run())
    (span,) = [s for s in recorded.spans.get_finished_spans() if s.name.startswith("job ")]
    assert span.attributes is not None and span.attributes["job.outcome"] == "lost"


def test_every_way_a_job_ends_is_counted_once_where_it_is_committed(tmp_path: Path) -> None:
    # A job cancelled while it waits, and one stopped at its deadline, end without a run
    # that completes: they are counted where their settle is committed.
    import asyncio

    from tests import durable_jobs as jobs

    recorded = Recorded()

    async def run() -> None:
        with open_store(f"sqlite:///{tmp_path}/s.db", poll_interval=0.05) as store:
            runtime = Runtime(store)
            attach(runtime, recorded.observer)
            worker = Worker(runtime, poll_interval=0.05)
            task = asyncio.create_task(worker.run())
            runtime.start(jobs.sleeper, 600, id="waits")
            runtime.start(jobs.timeboxed_work, 1000, 0.05, id="late")
            runtime.start(jobs.fails, "no", id="fails")
            runtime.start(jobs.squares, 2, id="done")
            await eventually(lambda: (t := runtime.tasks.get("waits")) and t.waiting_on,
                             what="the sleeper waits")  # fmt: skip
            runtime.cancel("waits")
            for job_id in ("waits", "late", "fails", "done"):
                await store.wait(job_id, timeout=30)
            worker.stop()
            await task

    asyncio.run(run())
    settled = {
        (a["kind"], a["status"]): n for a, n in recorded.metrics()["agent_tools.jobs.settled"]
    }
    assert settled == {
        ("tests.sleeper", "cancelled"): 1,
        ("tests.timeboxed_work", "timed_out"): 1,
        ("tests.fails", "failed"): 1,
        ("tests.squares", "completed"): 1,
    }


def test_otel_without_the_extra_is_a_clear_error(tmp_path: Path) -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http  # type: ignore[import-not-found]  # noqa: F401

        pytest.skip("the OTLP exporter is installed here: the extra is present")
    except ImportError:
        pass
    result = subprocess.run(
        [str(Path(sys.executable).parent / "agent-tools"), "worker", "--otel", "--db",
         str(tmp_path / "o.db")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--otel needs the OpenTelemetry SDK and OTLP exporter" in result.stderr
    assert "pip install 'agent-tools[otel]'" in result.stderr


def test_json_logs_are_one_object_a_line_with_extras_and_exceptions() -> None:
    record = logging.LogRecord(
        "agent_tools.x", logging.WARNING, __file__, 1, "job %s lost", ("j-1",), None
    )
    record.job_id = "j-1"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "agent_tools.x"
    assert line["message"] == "job j-1 lost" and line["job_id"] == "j-1"
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(failed))
    assert "ValueError: boom" in entry["exc"] and "\n" not in JsonFormatter().format(failed)
