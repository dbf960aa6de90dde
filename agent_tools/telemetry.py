"""OpenTelemetry traces and metrics for jobs — optional (``agent-tools[otel]``), off by
default (``serve --otel`` / ``worker --otel`` turn them on).

``OtelObserver`` implements the runtime's observer hook (``promises.observe``):

* Traces: every job is one trace, whose id is derived from the job id, so the runs of
  a job in different processes and days land in the same trace. Each run (a claim that
  executes the job until it settles, suspends or is stopped) is a span
  ``job <kind>`` with the job id, the attempt and how long the job waited to wake;
  each step is a child span ``step <name>`` with its id and attempt; a wait (a sleep, a
  person, a promise) is an event on the run span; the run's outcome is an attribute,
  and a failure sets the span's status.
* Metrics: ``agent_tools.jobs.started`` (by kind), ``agent_tools.jobs.settled`` (by
  kind and status: completed, failed, cancelled, timed_out; counted where the settle is
  committed, once per job), ``agent_tools.runs`` (by kind and outcome),
  ``agent_tools.steps.failed`` (by step name), the histogram
  ``agent_tools.jobs.wake_latency`` (ms from ready to running, by kind) and the gauge
  ``agent_tools.jobs.ready`` (jobs ready to run and not yet claimed: the queue depth).

The observer is called on the event loop: it only records, never blocks.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from promises import JOB_TAG, NullObserver, Promise, Runtime
from promises.observe import JOB_STATUS, JobStatus, RunOutcome, emit

log = logging.getLogger("agent_tools.telemetry")
SCOPE = "agent_tools"


def job_trace_context(job_id: str) -> Any:
    """A parent context whose trace id is derived from the job id: every run of the job,
    in any process, joins the same trace."""
    digest = hashlib.sha256(job_id.encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    sampled = TraceFlags(TraceFlags.SAMPLED)
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=sampled)
    return trace.set_span_in_context(NonRecordingSpan(parent))


class OtelObserver(NullObserver):
    """The runtime's observer (``promises.Observer``), recording spans and metrics (see
    the module doc)."""

    def __init__(
        self,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        ready_count: Callable[[], int] | None = None,
    ) -> None:
        self._ready_count = ready_count
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(SCOPE)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(SCOPE)
        self.started = meter.create_counter("agent_tools.jobs.started", "{job}", "jobs started")
        self.settled = meter.create_counter("agent_tools.jobs.settled", "{job}", "jobs settled")
        self.runs = meter.create_counter("agent_tools.runs", "{run}", "job runs by outcome")
        self.step_failures = meter.create_counter(
            "agent_tools.steps.failed", "{step}", "step attempts that raised"
        )
        self.wake = meter.create_histogram(
            "agent_tools.jobs.wake_latency", "ms", "from ready to running"
        )

        def observe(_: Any) -> Iterator[metrics.Observation]:
            # Read in the exporter's thread, when metrics are collected.
            if self._ready_count is None:
                return
            try:
                yield metrics.Observation(self._ready_count())
            except Exception:  # the store is away: no reading this time
                log.debug("could not read the ready-queue depth", exc_info=True)

        meter.create_observable_gauge(
            "agent_tools.jobs.ready", [observe], "{job}", "jobs ready and not yet claimed"
        )
        self._runs: dict[str, Any] = {}
        self._steps: dict[str, Any] = {}

    def watch_queue(self, ready_count: Callable[[], int]) -> None:
        """Where the ``agent_tools.jobs.ready`` gauge reads the queue's depth."""
        self._ready_count = ready_count

    # -- runs -----------------------------------------------------------------------------

    def run_started(self, job_id: str, kind: str, attempt: int, woke_after_ms: int | None) -> None:
        span = self.tracer.start_span(
            f"job {kind}",
            context=job_trace_context(job_id),
            attributes={"job.id": job_id, "job.kind": kind, "job.attempt": attempt},
        )
        if woke_after_ms is not None:
            span.set_attribute("job.woke_after_ms", woke_after_ms)
            self.wake.record(woke_after_ms, {"kind": kind})
        self._runs[job_id] = span

    def job_started(self, job_id: str, kind: str) -> None:
        self.started.add(1, {"kind": kind})

    def job_settled(self, job_id: str, kind: str, status: JobStatus) -> None:
        self.settled.add(1, {"kind": kind, "status": status})

    def settled_promise(self, promise: Promise) -> None:
        """A store's settle listener (``SqlStore.on_settled``): jobs' settles only."""
        kind = promise.tags.get(JOB_TAG)
        status = JOB_STATUS.get(promise.state)
        if kind is not None and status is not None:
            emit(self.job_settled, promise.id, kind, status)

    def run_ended(
        self, job_id: str, kind: str, outcome: RunOutcome, error_type: str | None
    ) -> None:
        self.runs.add(1, {"kind": kind, "outcome": outcome})
        span = self._runs.pop(job_id, None)
        if span is None:
            return
        span.set_attribute("job.outcome", outcome)
        if error_type:
            span.set_attribute("error.type", error_type)
        if outcome in ("failed", "lost"):
            span.set_status(Status(StatusCode.ERROR, error_type or outcome))
        span.end()

    def waiting(self, job_id: str, kind: str, waiting_on: str | None, until_ms: int) -> None:
        span = self._runs.get(job_id)
        if span is None:
            return
        attributes: dict[str, Any] = {}
        if waiting_on is not None:
            attributes["wait.on"] = waiting_on
        attributes["wait.until_ms"] = until_ms
        span.add_event("waiting", attributes)

    # -- steps ----------------------------------------------------------------------------

    def step_started(self, job_id: str, step_id: str, name: str, attempt: int) -> None:
        parent = self._runs.get(job_id)
        context = trace.set_span_in_context(parent) if parent is not None else None
        self._steps[step_id] = self.tracer.start_span(
            f"step {name}",
            context=context,
            attributes={
                "step.id": step_id,
                "step.name": name,
                "step.attempt": attempt,
                "job.id": job_id,
            },
        )
        if attempt > 1 and parent is not None:
            parent.add_event("retry", {"step.id": step_id, "step.attempt": attempt})

    def step_ended(self, job_id: str, step_id: str, name: str, attempt: int, ok: bool,
                   error_type: str | None) -> None:  # fmt: skip
        span = self._steps.pop(step_id, None)
        if not ok:
            self.step_failures.add(1, {"step": name})
        if span is None:
            return
        if not ok:
            span.set_status(Status(StatusCode.ERROR, error_type or "error"))
            if error_type:
                span.set_attribute("error.type", error_type)
        span.end()


@contextlib.contextmanager
def exporting(service_name: str = "agent-tools") -> Iterator[tuple[Any, Any]]:
    """SDK providers exporting over OTLP/HTTP (``$OTEL_EXPORTER_OTLP_ENDPOINT`` and the
    other standard ``OTEL_*`` variables); flushed and shut down on exit."""
    try:
        # Installed by the extra only, hence untyped here.
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        from agent_tools.config import ConfigError

        raise ConfigError(
            f"--otel needs the OpenTelemetry SDK and OTLP exporter ({exc.name} is missing): "
            "pip install 'agent-tools[otel]'"
        ) from exc
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    try:
        yield tracer_provider, meter_provider
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


def attach(runtime: Runtime, observer: OtelObserver) -> None:
    """Have ``runtime`` (and the workers that run it) report to ``observer``, and let the
    observer read the ready-queue depth from it."""
    runtime.observer = observer
    observer.watch_queue(runtime.tasks.ready_count)
    # Settles counted where they are committed: a job cancelled while it waits, or whose
    # deadline passes, ends without a run to report it.
    runtime.store.on_settled(observer.settled_promise)
