"""What the tools answer, as typed models: their JSON Schemas are the tools'
``outputSchema``, so a client (and a model) knows every field before it calls.

``JobStatus`` is one status for jobs, timers and schedules (``type`` says which);
``status`` is one ``Literal``, the one ``agent_tools.jobs.Status`` defines. Fields a
status does not have are left out of the answer rather than sent as null.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from agent_tools.jobs import Status

#: Any JSON value, spelled so that every client's schema dialect can read it (one
#: ``type`` per branch: some clients refuse type arrays and untyped schemas).
_SCALARS: list[dict[str, Any]] = [{"type": t} for t in ("string", "number", "boolean", "null")]
ANY_JSON: dict[str, Any] = {
    "anyOf": [
        {"type": "object", "additionalProperties": True},
        {"type": "array", "items": {"anyOf": [{"type": "object"}, {"type": "array"}, *_SCALARS]}},
        *_SCALARS,
    ]
}
AnyJson = Annotated[Any, WithJsonSchema(ANY_JSON)]
Time = Annotated[
    str, Field(description="ISO-8601 UTC time with milliseconds, e.g. '2026-12-01T09:00:00.000Z'")
]


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ErrorInfo(Answer):
    type: str = Field(
        description="The error's type, e.g. 'ValueError', 'TimeoutError', 'NotFound'."
    )
    message: str = Field(description="What went wrong, in words.")


class Progress(Answer):
    message: str = Field(description="The job's own last progress message.")
    fraction: float | None = Field(None, description="How far along, 0 to 1, when the job says.")
    at: Time


class WaitingFor(Answer):
    time: Time | None = Field(None, description="Waiting until this time.")
    reason: str | None = Field(
        None,
        description="Why it waits for that time (a scheduled start, a retry backoff, a cron run).",
    )
    approval: str | None = Field(None, description="The id of the approval a person must decide.")
    request: AnyJson = Field(None, description="What the person is asked (question and details).")
    deadline: Time | None = Field(None, description="The approval expires at this time.")
    link: str | None = Field(None, description="A web page where a person decides the approval.")
    promise: str | None = Field(None, description="The id of another promise the job waits on.")
    question: str | None = Field(None, description="What the person is asked.")
    worker: str | None = Field(
        None, description="Waiting for a worker that runs this kind (none is running)."
    )


class LastRun(Answer):
    job_id: str = Field(description="The job the schedule started last.")
    at: Time | None = Field(None, description="When it was started.")
    status: Status | None = Field(None, description="How that job stands now.")
    error: ErrorInfo | None = Field(None, description="Why that job failed.")


class LastError(Answer):
    message: str = Field(description="Why the schedule could not start its job.")
    at: Time | None = None


class JobStatus(Answer):
    job_id: str = Field(description="The id: pass it to probe_status, await_result or cancel_job.")
    type: Literal["job", "timer", "schedule"] | None = Field(
        None, description="A job, a timer (from schedule without kind) or a cron schedule."
    )
    kind: str | None = Field(None, description="The job kind (for a schedule: the kind it starts).")
    status: Status = Field(
        description="running, waiting (see waiting_for), completed (see result), failed (see "
        "error), cancelled, timed_out, or unknown (no such id)."
    )
    created: bool | None = Field(
        None,
        description="On a start: false when this job_id already existed with the same "
        "arguments (the existing job is returned).",
    )
    created_at: Time | None = None
    updated_at: Time | None = Field(
        None, description="When the job's run last changed (started, suspended, retried)."
    )
    finished_at: Time | None = None
    duration_s: float | None = Field(None, description="Seconds from creation to the end.")
    result: AnyJson = Field(None, description="The job's result (status completed).")
    error: ErrorInfo | None = Field(None, description="Why it failed, timed out, or is unknown.")
    waiting_for: WaitingFor | None = Field(
        None, description="What a waiting job waits for: a time, or a person's decision."
    )
    progress: Progress | None = Field(None, description="The job's own progress while it runs.")
    attempts: int | None = Field(
        None,
        description="How many times the job has been run (retries and replays count).",
    )
    deadline: Time | None = Field(None, description="The job is timed out if not finished by then.")
    cron: str | None = Field(None, description="A schedule's cron expression.")
    timezone: str | None = Field(None, description="A schedule's time zone.")
    next_fire_at: Time | None = Field(None, description="A schedule's next run.")
    last_job_id: str | None = Field(None, description="The job a schedule started last.")
    last_run: LastRun | None = Field(None, description="How a schedule's last job went.")
    last_error: LastError | None = Field(
        None, description="The last time a schedule failed to start its job (it keeps firing)."
    )
    failures: int | None = Field(None, description="How many times the schedule failed to fire.")


class ProbeAnswer(Answer):
    jobs: list[JobStatus] = Field(description="One status per id asked, in the same order.")


class AwaitAnswer(Answer):
    done: list[JobStatus] = Field(
        description="Finished: completed, failed, cancelled or timed_out."
    )
    pending: list[JobStatus] = Field(
        description="Still running or waiting: call await_result again for these."
    )
    unknown: list[JobStatus] = Field(description="Ids no job, timer or schedule has.")
    waited_s: float = Field(description="How long this call waited.")


class ListAnswer(Answer):
    jobs: list[JobStatus] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as cursor for the next page; null on the last page."
    )


class ScheduleAnswer(Answer):
    id: str = Field(description="The timer's, job's or schedule's id.")
    type: Literal["timer", "job", "schedule"]
    status: Status
    next_fire_at: Time | None = Field(
        description="When the timer completes, the job starts, or the schedule next runs."
    )
    cron: str | None = None
    timezone: str | None = None
    now: Time = Field(description="The server's time when it answered.")


class TimeAnswer(Answer):
    now: Time = Field(description="The server's current time in UTC.")
    timezone: str = Field(description="The time zone of local.")
    local: str = Field(
        description="That instant in the time zone, with offset: '2026-12-01T10:00:00+01:00'."
    )
    weekday: str = Field(description="The local day of the week, e.g. 'Tuesday'.")
    unix_s: float = Field(description="Seconds since 1970-01-01T00:00:00Z.")


def dump(model: BaseModel) -> dict[str, Any]:
    """The answer as JSON, without the fields this status does not have (a field given
    as null stays: a completed job's null result, the last page's next_cursor)."""
    return model.model_dump(mode="json", exclude_unset=True)
