"""The reminder assistant, asleep across a restart — one command, offline.

    python examples/reminders/demo.py            # a scripted stand-in for the model
    python examples/reminders/demo.py --model    # your model (OPENAI_API_KEY, OPENAI_BASE_URL)

It starts a worker, asks "Remind me in 10 seconds to stretch", waits until the
assistant has gone to sleep (a durable timer), kills the worker (SIGKILL), starts a new
one, and shows the reminder delivered once, at its time, with no model call repeated.
The workers' logs go to stderr, marked [worker 1] and [worker 2].

While it waits it watches the job: if the model cannot be reached or refuses the
request, it says so at once, with what to set, and stops (the job itself would retry
the model call with backoff, then fail).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from examples.processes import AGENT_TOOLS, Child  # noqa: E402
from examples.reminders import agent  # noqa: E402
from promises import TIMER_TAG, Promise, Runtime, SqlStore, StoredError, open_store  # noqa: E402

JOB = "reminder"
#: What the assistant's model step logs when the model cannot be used (``agent._logged``).
MODEL_ERROR = re.compile(
    r"examples\.reminders\.agent: step \S+ \(attempt \d+\) failed with "
    r"(ModelUnreachable|ModelRefused): (.*)$"
)
#: What the job does after each of those errors.
AFTER = {
    "ModelUnreachable": "the job would retry the model call with backoff, then fail",
    "ModelRefused": "the job fails (retrying would not help)",
}


def worker(number: int, db: Path, env: dict[str, str]) -> Child:
    command = [AGENT_TOOLS, "worker", "--db", str(db), "--jobs", "examples.reminders.agent"]
    return Child(f"worker {number}", command, env)


def watch(store: SqlStore, workers: list[Child], done: Callable[[], bool], timeout: float,
          what: str) -> None:  # fmt: skip
    """Wait until ``done()``; stop at once, saying why, if the model cannot be used (a
    worker logged it) or the job failed."""
    deadline = time.monotonic() + timeout
    while not done():
        for child in workers:
            error = child.find(MODEL_ERROR)
            if error is not None:
                stop(error[2], AFTER[error[1]])
        job = store.get(JOB)
        if not job.pending:
            try:
                Runtime.result(job)
            except StoredError as failed:
                if failed.type in AFTER:
                    stop(failed.message, "the job failed")
                raise SystemExit(f"the assistant failed: {failed}") from None
            raise SystemExit(f"the assistant finished before {what}: {job.value.data}")
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f} s; see the log above")
        time.sleep(0.1)


def stop(model_error: str, job: str) -> NoReturn:
    raise SystemExit(
        f"the assistant could not use the model: {model_error}\nstopped the demo; {job}"
    )


@contextlib.contextmanager
def model(real: bool) -> Iterator[tuple[dict[str, str], list[int] | None]]:
    if real:
        if not os.environ.get("OPENAI_API_KEY"):
            raise SystemExit(f"--model needs OPENAI_API_KEY; {agent.HINT}")
        where = os.environ.get("OPENAI_BASE_URL") or "api.openai.com"
        print(f"your model: {os.environ.get('OPENAI_MODEL', 'gpt-4o-mini')} at {where}", flush=True)
        yield dict(os.environ), None
        return
    from examples.fakes import FakeOpenAI, reminder_script

    with FakeOpenAI(reminder_script) as fake:
        print(f"offline: a scripted stand-in for the model at {fake.url}", flush=True)
        yield {**os.environ, "OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": "offline",
               "OPENAI_MODEL": "fake-model"}, fake.requests  # fmt: skip


def local_time(ms: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="store_true",
        help="use your model (OPENAI_API_KEY, OPENAI_BASE_URL) instead of the stand-in",
    )
    parser.add_argument("--request", default="Remind me in 10 seconds to stretch",
                        help="what to ask the assistant")  # fmt: skip
    args = parser.parse_args()
    with (
        model(args.model) as (env, calls),
        tempfile.TemporaryDirectory() as scratch,
        open_store(f"sqlite:///{Path(scratch) / 'reminders.db'}") as store,
    ):
        db, outbox = Path(scratch) / "reminders.db", Path(scratch) / "outbox.jsonl"
        env = {**env, "REMINDERS_OUTBOX": str(outbox)}
        workers = [worker(1, db, env)]
        try:
            job = Runtime(store).start(agent.assistant, args.request, id=JOB)
            print(f'asked the assistant: "{args.request}" (job {job.promise.id})', flush=True)

            def timers() -> list[Promise]:
                return store.search(f"{JOB}.*", state="pending", tags={TIMER_TAG: "true"}).promises

            watch(store, workers, lambda: bool(timers()), 120, "the assistant to go to sleep")
            timer = timers()[0]
            print(f"the assistant sleeps until {local_time(timer.timeout_at)} "
                  "(a durable timer, no worker slot held)", flush=True)  # fmt: skip
            workers[0].kill()
            print("worker killed (SIGKILL) while the assistant sleeps", flush=True)
            workers.append(worker(2, db, env))
            print("a new worker started; the reminder is still due", flush=True)
            watch(store, workers, lambda: not store.get(JOB).pending, 180, "the reminder")
        finally:
            for child in workers:
                child.stop()
        result = Runtime.result(store.get(JOB))
        deliveries = [json.loads(line) for line in outbox.read_text().splitlines()]
    for entry in deliveries:
        at = datetime.fromisoformat(entry["at"]).timestamp() * 1000
        print(f"delivered: {entry['message']!r} at {local_time(at)}")
    print(f"assistant: {result['answer']}")
    repeated = "" if calls is None else f"; the model was called {len(calls)} times, none repeated"
    print(f"{result['model_calls']} model turns{repeated}")


if __name__ == "__main__":
    main()
