"""Hooks for seeing inside the runtime (traces, metrics): ``Runtime(observer=...)``.

The runtime calls these on the event loop, as things happen; an observer must return
quickly and never raise (what it raises is logged and dropped). ``NullObserver`` does
nothing; ``agent_tools.telemetry`` turns them into OpenTelemetry spans and metrics.
Times are milliseconds since the epoch, from the store's clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, Protocol

log = logging.getLogger("promises.observe")

RunOutcome = Literal["completed", "failed", "suspended", "cancelled", "interrupted", "lost"]
JobStatus = Literal["completed", "failed", "cancelled", "timed_out"]
#: A settled job promise's state, as a job status.
JOB_STATUS: dict[str, JobStatus] = {
    "resolved": "completed",
    "rejected": "failed",
    "rejected_canceled": "cancelled",
    "rejected_timedout": "timed_out",
}


class Observer(Protocol):
    def run_started(self, job_id: str, kind: str, attempt: int, woke_after_ms: int | None) -> None:
        """A worker starts (or resumes) running a job. ``woke_after_ms``: how long after
        the job became ready (None for a job started right here)."""

    def run_ended(
        self, job_id: str, kind: str, outcome: RunOutcome, error_type: str | None
    ) -> None:
        """The run ended: the job settled, suspended, was cancelled, interrupted by the
        store (it resumes), or its lease was lost."""

    def step_started(self, job_id: str, step_id: str, name: str, attempt: int) -> None: ...

    def step_ended(
        self, job_id: str, step_id: str, name: str, attempt: int, ok: bool, error_type: str | None
    ) -> None: ...

    def waiting(self, job_id: str, kind: str, waiting_on: str | None, until_ms: int) -> None:
        """The job suspends: on a promise (a timer, an approval) or until a time."""

    def job_started(self, job_id: str, kind: str) -> None:
        """A new job was created (not a duplicate start)."""

    def job_settled(self, job_id: str, kind: str, status: JobStatus) -> None:
        """A job settled, by a commit of this process: it finished, failed, was cancelled
        (running or waiting) or its deadline passed. Once per job across processes.
        Called on the store's writer thread."""


class NullObserver:
    def run_started(self, job_id: str, kind: str, attempt: int, woke_after_ms: int | None) -> None:
        pass

    def run_ended(
        self, job_id: str, kind: str, outcome: RunOutcome, error_type: str | None
    ) -> None:
        pass

    def step_started(self, job_id: str, step_id: str, name: str, attempt: int) -> None:
        pass

    def step_ended(
        self, job_id: str, step_id: str, name: str, attempt: int, ok: bool, error_type: str | None
    ) -> None:
        pass

    def waiting(self, job_id: str, kind: str, waiting_on: str | None, until_ms: int) -> None:
        pass

    def job_started(self, job_id: str, kind: str) -> None:
        pass

    def job_settled(self, job_id: str, kind: str, status: JobStatus) -> None:
        pass


def emit(hook: Callable[..., None], *args: object) -> None:
    """Call an observer's hook; what it raises is logged, never passed on: seeing must
    not break running."""
    try:
        hook(*args)
    except Exception:
        log.exception("observer hook %s failed", getattr(hook, "__qualname__", hook))
