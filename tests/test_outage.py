"""A store outage never fails a job, on PostgreSQL too (issue 9, item 6).

Worker processes run jobs while the test terminates every one of their database
connections (``pg_terminate_backend``, found by their application_name), again and
again, each time after more steps have run. Every job must still complete with the
right result, and every worker must still be running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from promises import Runtime, Value, open_store
from tests import durable_jobs as jobs
from tests.conftest import PG_URL, requires_postgres
from tests.waiting import until

ROOT = Path(__file__).parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def terminate(prefix: str) -> int:
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE %s AND pid <> pg_backend_pid()",
            (prefix + ":%",),
        ).fetchall()
    return len(rows)


def steps_logged(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@requires_postgres
def test_jobs_survive_their_workers_connections_being_terminated(
    pg_url: str, tmp_path: Path
) -> None:
    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "steps.log"
    url = f"{pg_url}&application_name={prefix}"
    command = [sys.executable, "-m", "promises.worker", "--db", url]
    command += ["--jobs", "tests.durable_jobs", "--concurrency", "8"]
    env = {**os.environ, "DURABLE_TEST_LOG": str(log)}
    workers = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for _ in range(2)
    ]
    ids = [f"o-{i}" for i in range(60)]
    try:
        with open_store(pg_url) as store:
            runtime = Runtime(store)
            for job_id in ids:
                runtime.start(jobs.squares, 4, 0.01, id=job_id)
            terminated = 0
            for round_ in range(1, 6):
                # Strike after more steps ran: observed progress, not a guessed moment.
                until(lambda r=round_: steps_logged(log) >= 30 * r, 120, "steps ran")  # type: ignore[misc]
                terminated += terminate(prefix)
            until(
                lambda: not any(p.pending for p in store.get_many(ids).values()),
                180,
                "every job settles",
            )
            outcomes = {i: store.get(i) for i in ids}
        assert terminated >= 5, "the test must actually cut the workers off"
        failed = {i: p.value.data for i, p in outcomes.items() if p.state != "resolved"}
        assert failed == {}
        assert all(Runtime.result(p) == [0, 1, 4, 9] for p in outcomes.values())
        assert all(w.poll() is None for w in workers), "a worker exited on a store error"
        steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
        assert set(steps) == {f"{i}.{k}" for i in ids for k in range(4)}
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)


class Forwarder:
    """A TCP forwarder in front of PostgreSQL that the test takes down and up: down, it
    refuses new connections and cuts the ones it carries, as an outage of the network
    or of the server does (unlike ``pg_terminate_backend``, connects fail too)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.listener: socket.socket | None = None
        self.carried: list[socket.socket] = []
        self.lock = threading.Lock()
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            carried, self.carried = self.carried, []
        if listener is not None:
            listener.close()
        for sock in carried:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # taken down
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    server.close()
                    return
                self.carried += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@requires_postgres
def test_jobs_and_workers_ride_out_an_outage_that_refuses_connections(
    pg_url: str, tmp_path: Path
) -> None:
    # A worker runs jobs through the forwarder; the database becomes unreachable (new
    # connections refused, open ones cut) while jobs wait for outside promises; a second
    # worker is started during the outage. Decisions are made meanwhile through another
    # path. When the database is back, every job completes and no worker has exited.
    target = urlsplit(pg_url.replace("postgresql+psycopg", "postgresql"))
    forwarder = Forwarder((target.hostname or "127.0.0.1", target.port or 5432))
    through = pg_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{forwarder.port}")
    log = tmp_path / "steps.log"
    env = {**os.environ, "DURABLE_TEST_LOG": str(log)}
    command = [sys.executable, "-m", "promises.worker", "--db", through,
               "--jobs", "tests.durable_jobs", "--concurrency", "32", "--poll-interval", "0.5"]  # fmt: skip
    errors = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers: list[subprocess.Popen[bytes]] = []

    def start_worker(n: int) -> None:
        with errors[n].open("ab") as err:
            workers.append(subprocess.Popen(command, cwd=ROOT, env=env, stderr=err,
                                            stdout=subprocess.DEVNULL))  # fmt: skip

    waiting = [f"wait-{i}" for i in range(12)]
    working = [f"work-{i}" for i in range(12)]
    try:
        start_worker(0)
        with open_store(pg_url) as store:  # the test's own path, not through the forwarder
            runtime = Runtime(store)
            for job_id in waiting:
                runtime.start(jobs.approval, 3, 600, id=job_id)
            for job_id in working:
                runtime.start(jobs.squares, 6, 0.05, id=job_id)

            def asked() -> bool:  # each waiting job ran its step and now waits
                return all(
                    (t := runtime.tasks.get(i)) is not None and t.waiting_on == f"{i}.0"
                    for i in waiting
                )

            until(asked, 120, "every waiting job waits for its promise")
            forwarder.down()
            start_worker(1)  # started while the database cannot be reached
            until(lambda: "not reachable yet" in errors[1].read_text(), 60,
                  "the second worker waits for the database")  # fmt: skip
            for job_id in waiting:  # decided meanwhile, by another path
                store.resolve(f"{job_id}.0", value=Value('"yes"'))
            until(lambda: "fail" in errors[0].read_text().lower(), 60,
                  "the first worker met the outage")  # fmt: skip
            forwarder.up()
            every = waiting + working
            until(lambda: not any(p.pending for p in store.get_many(every).values()), 180,
                  "every job settles")  # fmt: skip
            outcomes = store.get_many(every)
        failed = {i: p.value.data for i, p in outcomes.items() if p.state != "resolved"}
        assert failed == {}
        assert all(Runtime.result(outcomes[i])["answer"] == "yes" for i in waiting)
        assert all(Runtime.result(outcomes[i]) == [k * k for k in range(6)] for i in working)
        assert all(w.poll() is None for w in workers), "a worker exited on a store error"
        assert "UnboundLocalError" not in errors[0].read_text() + errors[1].read_text()
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
        forwarder.down()


def test_a_worker_given_a_database_that_refuses_it_says_why_and_exits(tmp_path: Path) -> None:
    # Wrong credentials or no such database: waiting would not help, so it says so.
    url = PG_URL.rsplit("/", 1)[0] + "/no_such_database_here"
    done = subprocess.run(
        [sys.executable, "-m", "promises.worker", "--db", url, "--jobs", "tests.durable_jobs"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert 'database "no_such_database_here" does not exist' in done.stderr
    assert "check the database URL" in done.stderr or "cannot open the store" in done.stderr
