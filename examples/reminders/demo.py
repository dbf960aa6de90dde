"""The reminder assistant, asleep across a restart — one command, offline.

    python examples/reminders/demo.py            # a scripted stand-in for the model
    python examples/reminders/demo.py --model    # your model (OPENAI_API_KEY, OPENAI_BASE_URL)

It starts a worker, asks "Remind me in 10 seconds to stretch", waits until the
assistant has gone to sleep (a durable timer), kills the worker (SIGKILL), starts a new
one, and shows the reminder delivered once, at its time, with no model call repeated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
AGENT_TOOLS = str(Path(sys.executable).parent / "agent-tools")

from examples.reminders import agent  # noqa: E402
from promises import TIMER_TAG, Runtime, open_store  # noqa: E402


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f} s; see the log above")
        time.sleep(0.1)


def worker(db: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [AGENT_TOOLS, "worker", "--db", str(db), "--jobs", "examples.reminders.agent"],
        cwd=ROOT, env=env,  # its log goes to our stderr
    )  # fmt: skip


@contextlib.contextmanager
def model(real: bool) -> Iterator[tuple[dict[str, str], list[int] | None]]:
    if real:
        if not os.environ.get("OPENAI_API_KEY"):
            raise SystemExit(f"--model needs OPENAI_API_KEY; {agent.HINT}")
        yield dict(os.environ), None
        return
    from examples.fakes import FakeOpenAI, reminder_script

    with FakeOpenAI(reminder_script) as fake:
        print(f"offline: a scripted stand-in for the model at {fake.url}", flush=True)
        yield {**os.environ, "OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": "offline",
               "OPENAI_MODEL": "fake-model"}, fake.requests  # fmt: skip


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
    directory = Path(tempfile.mkdtemp())
    db, outbox = directory / "reminders.db", directory / "outbox.jsonl"
    with model(args.model) as (env, calls), open_store(f"sqlite:///{db}") as store:
        env = {**env, "REMINDERS_OUTBOX": str(outbox)}
        first = worker(db, env)
        job = Runtime(store).start(agent.assistant, args.request, id="reminder")
        print(f'asked the assistant: "{args.request}" (job {job.promise.id})', flush=True)

        def asleep() -> bool:
            return (
                store.search("reminder.*", state="pending", tags={TIMER_TAG: "true"}).promises != []
            )

        wait_for(asleep, 120, "the assistant to go to sleep")
        timer = store.search("reminder.*", state="pending", tags={TIMER_TAG: "true"}).promises[0]
        wake = time.strftime("%H:%M:%S", time.localtime(timer.timeout_at / 1000))
        print(
            f"the assistant sleeps until {wake} (a durable timer, no worker slot held)", flush=True
        )
        first.send_signal(signal.SIGKILL)
        first.wait()
        print("worker killed (SIGKILL) while the assistant sleeps", flush=True)
        second = worker(db, env)
        print("a new worker started; the reminder is still due", flush=True)
        try:
            wait_for(lambda: not store.get("reminder").pending, 180, "the reminder")
        finally:
            second.terminate()
            second.wait()
        result = Runtime.result(store.get("reminder"))
        deliveries = [json.loads(line) for line in outbox.read_text().splitlines()]
        for entry in deliveries:
            print(f"delivered: {entry['message']!r} at {entry['at']}")
        print(f"assistant: {result['answer']}")
        repeated = (
            "" if calls is None else f"; the model was called {len(calls)} times, none repeated"
        )
        print(f"{result['model_calls']} model turns{repeated}")


if __name__ == "__main__":
    main()
