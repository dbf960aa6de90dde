"""The ``agent-tools`` command as an operator runs it: a real subprocess on a real file,
human tables by default, ``--json`` for scripts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_tools import builtin_jobs
from promises import Runtime, SqlStore, Worker, open_store
from tests import people_jobs
from tests.waiting import eventually, until

ROOT = Path(__file__).parent.parent
AGENT_TOOLS = str(Path(sys.executable).parent / "agent-tools")  # the installed command


def _run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_TOOLS_")}
    return subprocess.run(
        [AGENT_TOOLS, *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env={**base, "AGENT_TOOLS_SECRET": "cli-test", **(env or {})},
    )  # fmt: skip


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_worker_until(store: SqlStore, condition: Any) -> None:
    """A worker runs the store's jobs until ``condition()`` holds (then it goes away)."""

    async def go() -> None:
        worker = Worker(Runtime(store), poll_interval=0.05)
        task = asyncio.create_task(worker.run())
        try:
            await eventually(condition, what="the condition")
        finally:
            worker.stop()
            await task

    asyncio.run(go())


def waiting_on(store: SqlStore, job_id: str) -> str | None:
    task = Runtime(store).tasks.get(job_id)
    return task.waiting_on if task is not None else None


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def store(db: Path) -> Any:
    with open_store(f"sqlite:///{db}") as s:
        yield s


# -- the command itself -------------------------------------------------------------------


def test_bare_agent_tools_prints_help_and_every_option_says_what_it_does() -> None:
    bare = _run()
    assert bare.returncode == 0 and "usage: agent-tools" in bare.stdout
    for command in (
        "serve",
        "worker",
        "jobs",
        "approvals",
        "approve",
        "reject",
        "health",
        "config",
    ):
        assert command in bare.stdout
    from agent_tools.cli import _parser

    def walk(parser: Any, path: str) -> None:
        for action in parser._actions:
            if action.dest in ("help", "version"):
                continue
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")
                continue
            assert action.help, f"{path} {action.dest} has no help"  # arguments too

    walk(_parser(), "agent-tools")


def test_version_and_choices() -> None:
    from importlib.metadata import version

    shown = _run("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"agent-tools {version('agent-tools')}"
    wrong = _run("jobs", "list", "--status", "sleeping")
    assert wrong.returncode == 2 and "invalid choice: 'sleeping'" in wrong.stderr
    assert "'running', 'waiting', 'completed'" in wrong.stderr
    age = _run("jobs", "cancel", "--older-than", "soon")
    assert age.returncode == 2 and "use a number and a unit: 90s, 30m, 2h or 7d" in age.stderr


def test_read_commands_refuse_a_database_that_does_not_exist(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    for args in (["status"], ["jobs", "list"], ["jobs", "show", "x"], ["approvals"], ["health"],
                 ["approve", "x"], ["jobs", "cancel", "x"]):  # fmt: skip
        result = _run(*args, "--db", str(typo))
        assert result.returncode == 2, args
        assert f"no database at '{typo}'" in result.stderr and "check --db" in result.stderr
    assert not typo.exists()


def test_status_counts_promises_and_a_bad_url_is_a_clear_error(db: Path, store: SqlStore) -> None:
    store.create("a", timeout_at=store.clock() + 60_000)
    store.create("b", timeout_at=store.clock() + 60_000)
    store.resolve("b")
    counted = _json(_run("status", "--json", env={"AGENT_TOOLS_DB": str(db)}))
    assert counted["promises"] == {"pending": 1, "resolved": 1, "rejected": 0}
    table = _run("status", "--db", str(db))
    assert "pending   1" in table.stdout and "resolved  1" in table.stdout
    bad = _run("--db", "mysql://nowhere/x", "status")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "unsupported database 'mysql'" in bad.stderr


def test_a_sqlite_uri_as_the_database_is_refused_and_creates_no_file(tmp_path: Path) -> None:
    result = _run("serve", "--db", "sqlite:///file:x.db%3Fmode%3Dmemory", cwd=tmp_path)
    assert result.returncode != 0
    assert "not a SQLite URI" in result.stderr and "sqlite:///path/to/file.db" in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- jobs ---------------------------------------------------------------------------------


def test_jobs_list_is_a_table_for_people_and_json_for_scripts(db: Path, store: SqlStore) -> None:
    runtime = Runtime(store)
    runtime.start(people_jobs.refund, "B-2", 250.0, id="ask")
    runtime.start(builtin_jobs.sleep, 600, id="nap")
    runtime.start(people_jobs.fails, "quota exceeded", id="broken")
    run_worker_until(store, lambda: waiting_on(store, "ask") and waiting_on(store, "nap")
                     and not store.get("broken").pending)  # fmt: skip
    table = _run("jobs", "list", "--db", str(db), "--jobs", "tests.people_jobs")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "JOB",
        "KIND",
        "STATUS",
        "STARTED",
        "TOOK",
        "WAITING",
        "FOR",
        "/",
        "PROGRESS",
    ]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "waiting" in rows["ask"] and "a person: Refund 250.00 EUR for order B-2?" in rows["ask"]
    assert "its time in 10 min" in rows["nap"]
    assert "failed" in rows["broken"] and "Broken: the upstream said no" in rows["broken"]
    listed = _json(_run("jobs", "list", "--json", "--db", str(db)))
    assert {j["job_id"] for j in listed["jobs"]} == {"ask", "nap", "broken"}
    only = _json(_run("jobs", "list", "--status", "failed", "--json", "--db", str(db)))
    assert [j["job_id"] for j in only["jobs"]] == ["broken"]


def test_jobs_show_tells_the_story_and_an_unknown_id_exits_non_zero(
    db: Path, store: SqlStore
) -> None:
    Runtime(store).start(people_jobs.refund, "B-2", 250.0, id="ask")
    run_worker_until(store, lambda: waiting_on(store, "ask"))
    shown = _run(
        "jobs",
        "show",
        "ask",
        "--db",
        str(db),
        "--public-url",
        "https://ops.example",
        "--jobs",
        "tests.people_jobs",
    )
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert 'people.refund(order_id="B-2", amount_eur=250.0)' in text
    assert "a person to decide: Refund 250.00 EUR for order B-2?" in text
    assert "(in 47 hours)" in text and "https://ops.example/approve/" in text
    # The kind is not loaded here: positional arguments are shown by position, unnamed.
    data = _json(_run("jobs", "show", "ask", "--json", "--db", str(db)))
    assert data["arguments"] == {} and data["positional_arguments"] == ["B-2", 250.0]
    bare = _run("jobs", "show", "ask", "--db", str(db)).stdout
    assert 'people.refund("B-2", 250.0)' in bare and "arg1" not in bare
    named = _json(
        _run("jobs", "show", "ask", "--json", "--db", str(db), "--jobs", "tests.people_jobs")
    )
    assert named["arguments"] == {"order_id": "B-2", "amount_eur": 250.0}
    assert data["waiting_for"]["approval"] == "ask.0"
    unknown = _run("jobs", "show", "nobody", "--db", str(db))
    assert (
        unknown.returncode == 1
        and "no job, timer or schedule has the id 'nobody'" in unknown.stderr
    )


def test_links_point_at_the_pages_of_a_server_running_on_the_same_database(
    db: Path, store: SqlStore, tmp_path: Path
) -> None:
    import re

    Runtime(store).start(people_jobs.refund, "B-2", 250.0, id="ask")
    run_worker_until(store, lambda: waiting_on(store, "ask"))
    no_server = _json(_run("jobs", "show", "ask", "--json", "--db", str(db)))
    assert "link" not in no_server["waiting_for"]
    log = tmp_path / "server.log"
    home = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data")}
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_TOOLS_")}
    with log.open("w") as errors:
        server = subprocess.Popen(
            [AGENT_TOOLS, "serve", "--db", str(db), "--ui-port", "0",
             "--jobs", "tests.people_jobs", "--no-worker"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
            env={**base, **home, "AGENT_TOOLS_SECRET": "cli-test"},
        )  # fmt: skip
    try:

        def start_line() -> re.Match[str] | None:
            assert server.poll() is None, log.read_text()
            return re.search(r"pages: (http://\S+)/", log.read_text())

        found = until(start_line, what="the server's start line")
        assert found is not None
        shown = _json(_run("jobs", "show", "ask", "--json", "--db", str(db), env=home))
        assert shown["waiting_for"]["link"].startswith(found[1] + "/approve/")
        import httpx

        assert "Refund 250.00 EUR" in httpx.get(shown["waiting_for"]["link"]).text
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(20)
        assert server.stdout is not None
        server.stdout.close()
    gone = _json(_run("jobs", "show", "ask", "--json", "--db", str(db), env=home))
    assert "link" not in gone["waiting_for"]  # that server has stopped: no dead link


def test_jobs_watch_follows_a_job_until_it_finishes(db: Path, store: SqlStore) -> None:
    Runtime(store).start(people_jobs.nap, 0.5, id="short-nap")
    watcher = subprocess.Popen(
        [AGENT_TOOLS, "jobs", "watch", "short-nap", "--interval", "0.2",
         "--db", str(db)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watcher.stdout is not None
    first = watcher.stdout.readline()
    assert "short-nap" in first and ("running" in first or "waiting" in first)
    run_worker_until(store, lambda: not store.get("short-nap").pending)
    rest = watcher.stdout.read()
    assert watcher.wait(30) == 0
    assert rest.splitlines()[-1].split()[1:3] == ["short-nap", "completed"]
    assert '"rested"' in rest
    watcher.stdout.close()
    assert watcher.stderr is not None
    watcher.stderr.close()
    Runtime(store).start(people_jobs.fails, "no", id="fails")
    run_worker_until(store, lambda: not store.get("fails").pending)
    failed = _run("jobs", "watch", "fails", "--json", "--db", str(db))
    assert (
        failed.returncode == 1 and json.loads(failed.stdout.splitlines()[-1])["status"] == "failed"
    )


def test_a_failed_job_is_rerun_with_the_same_arguments_under_a_linked_id(
    db: Path, store: SqlStore
) -> None:
    Runtime(store).start(people_jobs.fails, "quota exceeded", id="broken")
    run_worker_until(store, lambda: not store.get("broken").pending)
    missing_kind = _run("jobs", "rerun", "broken", "--db", str(db))
    assert (
        missing_kind.returncode == 1
        and "job kind 'people.fails' is not loaded here" in missing_kind.stderr
    )
    again = _json(
        _run("jobs", "rerun", "broken", "--json", "--db", str(db), "--jobs", "tests.people_jobs")
    )
    assert again["job_id"] == "broken-rerun-1" and again["rerun_of"] == "broken"
    assert json.loads(store.get("broken-rerun-1").param.data or "")["args"] == ["quota exceeded"]
    run_worker_until(store, lambda: not store.get("broken-rerun-1").pending)  # fails again
    third = _json(
        _run(
            "jobs",
            "rerun",
            "broken-rerun-1",
            "--json",
            "--db",
            str(db),
            "--jobs",
            "tests.people_jobs",
        )
    )
    assert third["job_id"] == "broken-rerun-2"
    shown = _json(_run("jobs", "show", "broken", "--json", "--db", str(db)))
    assert shown["reruns"] == ["broken-rerun-1"]
    assert (
        _json(_run("jobs", "show", "broken-rerun-1", "--json", "--db", str(db)))["rerun_of"]
        == "broken"
    )
    Runtime(store).start(builtin_jobs.sleep, 600, id="still-going")
    busy = _run("jobs", "rerun", "still-going", "--db", str(db))
    assert busy.returncode == 1 and "has not finished" in busy.stderr


def test_cancel_by_id_or_in_bulk_by_filter_with_a_dry_run_first(db: Path, store: SqlStore) -> None:
    runtime = Runtime(store)
    for i in range(5):
        runtime.start(builtin_jobs.sleep, 600, id=f"nap-{i}")
    runtime.start(people_jobs.refund, "Z-1", 10.0, id="keep")
    run_worker_until(store, lambda: all(waiting_on(store, f"nap-{i}") for i in range(5))
                     and waiting_on(store, "keep"))  # fmt: skip
    one = _run("jobs", "cancel", "nap-0", "--db", str(db))
    assert one.returncode == 0 and one.stdout.strip() == "cancelled nap-0"
    dry = _run("jobs", "cancel", "--status", "waiting", "--kind", "sleep", "--db", str(db))
    assert dry.returncode == 0 and "4 jobs match" in dry.stdout and "Add --yes" in dry.stdout
    assert store.get("nap-1").pending  # nothing cancelled without --yes
    done = _json(
        _run(
            "jobs",
            "cancel",
            "--status",
            "waiting",
            "--kind",
            "sleep",
            "--yes",
            "--json",
            "--db",
            str(db),
        )
    )
    assert sorted(done["cancelled"]) == ["nap-1", "nap-2", "nap-3", "nap-4"]
    assert store.get("keep").pending
    again = _run("jobs", "cancel", "nap-1", "--db", str(db))
    assert again.returncode == 1 and "already cancelled" in again.stdout
    unknown = _run("jobs", "cancel", "nobody", "--db", str(db))
    assert (
        unknown.returncode == 1
        and "no job, timer or schedule has the id 'nobody'" in unknown.stdout
    )
    neither = _run("jobs", "cancel", "--db", str(db))
    assert neither.returncode == 2 and "say which jobs" in neither.stderr


def test_jobs_of_kinds_this_process_never_loaded_are_listed_and_cancelled(
    db: Path, store: SqlStore
) -> None:
    runtime = Runtime(store)
    runtime.start(people_jobs.refund, "B-2", 250.0, hours=3, id="ask")
    runtime.start(builtin_jobs.sleep, 600, id="nap")
    run_worker_until(store, lambda: waiting_on(store, "ask") and waiting_on(store, "nap"))
    assert "people.refund" in _json(_run("health", "--json", "--db", str(db)))["kinds"]
    # No --jobs: people.refund is not imported here, yet it is in the database.
    listed = _json(_run("jobs", "list", "--kind", "people.refund", "--json", "--db", str(db)))
    assert [j["job_id"] for j in listed["jobs"]] == ["ask"]
    none = _run("jobs", "list", "--kind", "people.nope", "--db", str(db))
    assert none.returncode == 0 and none.stdout.strip() == "No jobs of kind 'people.nope'."
    shown = _run("jobs", "show", "ask", "--db", str(db)).stdout
    assert 'people.refund("B-2", 250.0, hours=3)' in shown
    dry = _run("jobs", "cancel", "--kind", "people.refund", "--db", str(db))
    assert dry.returncode == 0 and "1 jobs match" in dry.stdout and "  ask" in dry.stdout
    done = _json(_run("jobs", "cancel", "--kind", "people.refund", "--yes", "--json",
                      "--db", str(db)))  # fmt: skip
    assert done["cancelled"] == ["ask"] and store.get("nap").pending


def test_errors_speak_in_cli_words_and_bad_options_exit_2_with_the_allowed_range(
    db: Path, store: SqlStore
) -> None:
    Runtime(store).start(builtin_jobs.sleep, 0, id="quick")
    run_worker_until(store, lambda: not store.get("quick").pending)
    for args, said in (
        (["jobs", "list", "--limit", "500"], "use a whole number from 1 to 200"),
        (["jobs", "list", "--limit", "0"], "use a whole number from 1 to 200"),
        (["schedules", "list", "--limit", "5000"], "use a whole number from 1 to 1000"),
        (["jobs", "watch", "quick", "--interval", "0"], "use seconds from 0.1 to 3600"),
        (["jobs", "show", ""], "'' is not an id"),
        (["jobs", "list", "--cursor", "garbage"], "--cursor 'garbage' is not one printed"),
        (["jobs", "cancel", "quick", "--kind", "sleep"], "give job ids or a filter"),
    ):
        bad = _run(*args, "--db", str(db))
        assert bad.returncode == 2, (args, bad.returncode, bad.stderr)
        assert said in bad.stderr, (args, bad.stderr)
        assert "next_cursor" not in bad.stderr and "list_jobs" not in bad.stderr
    unknown = _run("jobs", "cancel", "nobody", "--db", str(db))
    assert unknown.returncode == 1
    assert "'nobody'; agent-tools jobs list shows them" in unknown.stdout, unknown.stdout
    finished = _run("jobs", "cancel", "quick", "--db", str(db))
    assert finished.returncode == 1
    assert "already completed; to run it again: agent-tools jobs rerun quick" in finished.stdout


# -- approvals ----------------------------------------------------------------------------


def test_approvals_lists_what_waits_for_a_person_and_approve_decides_only_those(
    db: Path, store: SqlStore
) -> None:
    runtime = Runtime(store)
    runtime.start(builtin_jobs.approval, "Ship it?", id="ask-1")
    runtime.start(builtin_jobs.approval, "Delete it?", id="ask-2")
    runtime.start(builtin_jobs.sleep, 1800, id="nap")
    runtime.start(people_jobs.report, "Oslo", ["2025-01"], id="rep")
    run_worker_until(store, lambda: waiting_on(store, "ask-1") and waiting_on(store, "ask-2")
                     and waiting_on(store, "nap") and not store.get("rep").pending)  # fmt: skip
    listed = _json(_run("approvals", "--json", "--db", str(db)))
    assert {(a["job_id"], a["question"]) for a in listed["approvals"]} == {
        ("ask-1", "Ship it?"), ("ask-2", "Delete it?")}  # fmt: skip
    table = _run("approvals", "--db", str(db))
    assert (
        "Ship it?" in table.stdout
        and "Delete it?" in table.stdout
        and "in 48 hours" in table.stdout
    )
    # Only approvals may be decided: not a sleeping job, its timer, or a step.
    for target, said in (("nap", "'nap' is not something a person decides: it is a job"),
                         ("nap.0", "'nap.0' is not something a person decides: it is a timer"),
                         ("rep.0", "'rep.0' is not something a person decides: it is a step of job rep")):  # fmt: skip
        refused = _run("approve", target, "--db", str(db))
        assert refused.returncode == 1 and said in refused.stderr, refused.stderr
        assert "agent-tools approvals` lists the open ones" in refused.stderr
    assert (
        "To stop the job instead: agent-tools jobs cancel nap"
        in _run("reject", "nap", "--db", str(db)).stderr
    )
    assert store.get("nap").pending and store.get("nap.0").pending
    approved = _json(
        _run("approve", "ask-1", "--comment", "go", "--by", "ana", "--json", "--db", str(db))
    )
    assert approved == {
        "approval": "ask-1.0",
        "approved": True,
        "comment": "go",
        "by": "ana",
        "job_id": "ask-1",
    }
    assert _run("reject", "ask-2.0", "--db", str(db)).stdout.startswith("rejected ask-2.0")
    second = _run("approve", "ask-1", "--db", str(db))
    assert second.returncode == 1
    assert (
        "This was already approved by ana on" in second.stderr
        and 'with the comment "go"' in second.stderr
    )
    assert "The first decision stands" in second.stderr and "idempotency" not in second.stderr
    run_worker_until(store, lambda: not store.get("ask-1").pending)
    assert _json(_run("approvals", "--json", "--db", str(db)))["approvals"] == []


def test_an_expired_approval_is_answered_in_a_persons_words(db: Path, store: SqlStore) -> None:
    Runtime(store).start(builtin_jobs.approval, "Quick?", None, 0.3 / 3600, id="late")
    run_worker_until(store, lambda: not store.get("late").pending)
    late = _run("approve", "late.0", "--db", str(db))
    assert late.returncode == 1
    assert "This approval expired on" in late.stderr and "without a decision" in late.stderr
    assert "(just now)" in late.stderr or "ago)" in late.stderr
    by_job = _run("approve", "late", "--db", str(db))  # the job's id means its approval
    assert by_job.returncode == 1 and "Job 'late' asked 'Quick?' (late.0)" in by_job.stderr
    assert "This approval expired on" in by_job.stderr
    assert "not something a person decides" not in by_job.stderr


def test_deciding_again_after_the_job_finished_says_who_decided_and_when(
    db: Path, store: SqlStore
) -> None:
    runtime = Runtime(store)
    runtime.start(builtin_jobs.approval, "Ship it?", id="ship")
    runtime.start(builtin_jobs.approval, "Delete it?", id="delete")
    runtime.start(builtin_jobs.approval, "Rename it?", id="rename")
    run_worker_until(store, lambda: all(waiting_on(store, j) for j in ("ship", "delete", "rename")))
    assert (
        _run("approve", "ship", "--by", "ana", "--comment", "go", "--db", str(db)).returncode == 0
    )
    assert _run("reject", "delete.0", "--by", "bob", "--db", str(db)).returncode == 0
    assert _run("jobs", "cancel", "rename", "--db", str(db)).returncode == 0
    run_worker_until(
        store, lambda: not store.get("ship").pending and not store.get("delete").pending
    )
    for args, said in (
        (("approve", "ship"), "Job 'ship' asked 'Ship it?' (ship.0). This was already approved "
                              "by ana on"),
        (("reject", "ship.0"), "This was already approved by ana on"),
        (("approve", "delete"), "Job 'delete' asked 'Delete it?' (delete.0). This was already "
                                "rejected by bob on"),
        (("approve", "rename"), "Nobody waits for this decision any more: its job 'rename' has "
                                "ended"),
    ):  # fmt: skip
        again = _run(*args, "--db", str(db))
        assert again.returncode == 1 and said in again.stderr, (args, again.stderr)
        assert "not something a person decides" not in again.stderr
        assert "jobs cancel" not in again.stderr
    assert 'with the comment "go"' in _run("approve", "ship", "--db", str(db)).stderr
    assert _json(_run("jobs", "show", "ship", "--json", "--db", str(db)))["result"]["approved"]


# -- health -------------------------------------------------------------------------------


def test_health_counts_jobs_per_status_and_kind_and_names_the_oldest_waiting_job(
    db: Path, store: SqlStore
) -> None:
    runtime = Runtime(store)
    runtime.start(builtin_jobs.approval, "First?", id="oldest")
    runtime.start(builtin_jobs.sleep, 600, id="nap")
    runtime.start(people_jobs.fails, "x", id="broken")
    runtime.start(people_jobs.report, "Oslo", ["2025-01"], id="rep")
    run_worker_until(store, lambda: waiting_on(store, "oldest") and waiting_on(store, "nap")
                     and not store.get("broken").pending and not store.get("rep").pending)  # fmt: skip
    data = _json(_run("health", "--json", "--db", str(db)))
    assert data["jobs"] == {"running": 0, "waiting": 2, "completed": 1, "failed": 1,
                            "cancelled": 0, "timed_out": 0}  # fmt: skip
    assert data["kinds"]["sleep"]["waiting"] == 1 and data["kinds"]["people.fails"]["failed"] == 1
    assert data["oldest_waiting"]["job_id"] == "oldest"
    text = _run("health", "--db", str(db)).stdout
    assert (
        "Oldest waiting job: oldest (approval)" in text and "waiting for a person: First?" in text
    )


# -- serve, worker and client configs -----------------------------------------------------


def test_the_worker_logs_what_it_runs_and_json_logs_are_json(db: Path, store: SqlStore) -> None:
    worker = subprocess.Popen(
        [AGENT_TOOLS, "worker", "--db", str(db), "--jobs",
         "tests.people_jobs", "--log-format", "json"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker.stderr is not None
    line = json.loads(worker.stderr.readline())
    worker.terminate()
    assert worker.wait(20) == 0
    rest = [json.loads(line) for line in worker.stderr.read().splitlines() if line.strip()]
    worker.stderr.close()
    assert line["level"] == "info" and line["logger"] == "agent_tools.serve"
    assert f"database sqlite:///{db}" in line["message"]
    assert "people.report" in line["message"] and "concurrency 16" in line["message"]
    assert rest[-1]["message"] == "worker stopped"


def test_cpu_keeps_the_worker_and_all_its_threads_on_that_cpu(db: Path, store: SqlStore) -> None:
    cpu = max(os.sched_getaffinity(0))
    worker = subprocess.Popen(
        [AGENT_TOOLS, "worker", "--db", str(db), "--jobs", "tests.people_jobs",
         "--cpu", str(cpu), "--log-format", "json"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker.stderr is not None
    try:
        json.loads(worker.stderr.readline())  # it is up
        tasks = Path(f"/proc/{worker.pid}/task")
        # Its writer, readers and others start as it registers and looks for work.
        threads = until(lambda: (found := list(tasks.iterdir()))[1:] and found,
                        what="the worker's threads")  # fmt: skip
        allowed = {os.sched_getaffinity(int(t.name)) == {cpu} for t in threads}
        assert allowed == {True}
    finally:
        worker.terminate()
        worker.wait(20)
        worker.stderr.close()
    refused = _run("worker", "--db", str(db), "--cpu", "4096")
    assert refused.returncode == 2
    assert "'4096' is not a CPU this process may run on; choose one of" in refused.stderr
    assert "--cpu" in _run("serve", "--help").stdout


def test_config_prints_absolute_paths_and_what_it_prints_runs_from_anywhere(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    db = tmp_path / "c.db"
    desktop = _json(
        _run("config", "claude-desktop", "--db", str(db), "--jobs", "tests.people_jobs")
    )
    entry = desktop["mcpServers"]["agent-tools"]
    assert Path(entry["command"]).is_absolute() and Path(entry["command"]).exists()
    assert entry["args"] == ["serve", "--db", f"sqlite:///{db}", "--jobs", "tests.people_jobs"]
    assert entry["env"] == {"PYTHONPATH": str(ROOT)}
    # Launch exactly what it printed, from another directory, as Claude Desktop would.
    from mcp import Client, StdioServerParameters

    async def tools() -> set[str]:
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        params = StdioServerParameters(command=entry["command"], args=entry["args"],
                                       env={**base, **entry["env"]}, cwd=str(elsewhere))  # fmt: skip
        async with Client(params) as client:
            return {t.name for t in (await client.list_tools()).tools}

    assert {"start_job", "start_people_report"} <= asyncio.run(tools())
    code = _json(_run("config", "claude-code", "--db", str(db)))["mcpServers"]["agent-tools"]
    assert code["type"] == "stdio" and code["env"] == {}
    pages = _json(_run("config", "cursor", "--ui-port", "8800", "--db", str(db)))
    assert pages["mcpServers"]["agent-tools"]["args"][-2:] == ["--ui-port", "8800"]
    cursor_http = _json(_run("config", "cursor", "--http", "--port", "9000", "--token"))
    assert cursor_http["mcpServers"]["agent-tools"] == {
        "url": "http://127.0.0.1:9000/mcp",
        "headers": {"Authorization": "Bearer ${AGENT_TOOLS_TOKEN}"},
    }
    refused = _run("config", "claude-desktop", "--http")
    assert (
        refused.returncode == 2 and "Claude Desktop launches servers over stdio" in refused.stderr
    )


def test_health_names_the_live_workers_their_kinds_and_jobs_no_worker_can_run(
    db: Path, store: SqlStore
) -> None:
    from tests import durable_jobs

    worker = subprocess.Popen(
        [AGENT_TOOLS, "worker", "--db", str(db), "--jobs", "tests.people_jobs"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stderr is not None
        assert "agent-tools worker on database" in worker.stderr.readline()
        Runtime(store).start(durable_jobs.squares, 2, id="orphan")  # a kind no worker has

        def both_known() -> Any:  # the worker has reported, and the orphan is counted
            data = _json(_run("health", "--json", "--db", str(db)))
            return data if data["workers"] and data["no_worker_for"] else None

        data = until(both_known, what="health names the worker and the orphan job")
        (alive,) = data["workers"]
        assert alive["pid"] == worker.pid and "people.report" in alive["kinds"]
        assert "tests.squares" not in alive["kinds"]
        assert data["no_worker_for"] == {"tests.squares": 1} and data["ready_queue"] == 1
        text = _run("health", "--db", str(db)).stdout
        assert "Workers alive: 1" in text and "approval, people.busy" in text
        assert "1 tests.squares job wait for a worker with that kind: none is alive" in text
        listed = _run("jobs", "list", "--db", str(db)).stdout
        assert "a worker with kind tests.squares (none has run)" in listed
        shown = _json(_run("jobs", "show", "orphan", "--json", "--db", str(db)))
        assert shown["waiting_for_worker"] == {"kind": "tests.squares", "last_seen": None}
    finally:
        worker.terminate()
        worker.wait(20)
        if worker.stderr is not None:
            worker.stderr.close()
    after = _json(_run("health", "--json", "--db", str(db)))
    assert after["workers"] == [] and after["workers_stopped"] == 1


def test_schedules_are_listed_paused_resumed_and_cancelled(db: Path, store: SqlStore) -> None:
    from promises import Schedules

    Schedules(Runtime(store)).add("nightly-oslo", "0 3 * * *", people_jobs.report, "Oslo", ["2025-01"],
                                  timezone="Europe/Oslo")  # fmt: skip
    listed = _json(_run("schedules", "list", "--json", "--db", str(db)))
    (nightly,) = listed["schedules"]
    assert nightly["id"] == "nightly-oslo" and nightly["state"] == "active"
    assert nightly["cron"] == "0 3 * * *" and nightly["timezone"] == "Europe/Oslo"
    assert nightly["kind"] == "people.report" and nightly["next_fire_at"] is not None
    table = _run("schedules", "list", "--db", str(db)).stdout
    assert "nightly-oslo" in table and "0 3 * * * (Europe/Oslo)" in table and "never" in table
    paused = _json(_run("schedules", "pause", "nightly-oslo", "--json", "--db", str(db)))
    assert paused["state"] == "paused" and paused["next_fire_at"] is None
    assert _json(_run("schedules", "list", "--state", "paused", "--json", "--db", str(db)))[
        "schedules"
    ]
    resumed = _run("schedules", "resume", "nightly-oslo", "--db", str(db))
    assert resumed.stdout.startswith("schedule nightly-oslo is active, next in ")
    assert (
        _json(_run("schedules", "cancel", "nightly-oslo", "--json", "--db", str(db)))["state"]
        == "cancelled"
    )
    again = _run("schedules", "resume", "nightly-oslo", "--db", str(db))
    assert again.returncode == 1 and "was cancelled; it cannot be active" in again.stderr
    unknown = _run("schedules", "pause", "nope", "--db", str(db))
    assert unknown.returncode == 1 and "no schedule is named 'nope'" in unknown.stderr


def test_arguments_are_named_where_the_kind_is_known_and_by_position_elsewhere() -> None:
    # One reader of a job's arguments for the CLI and the pages.
    from agent_tools.present import call_text, job_arguments
    from promises import Value
    from promises.records import Promise
    from tests import durable_jobs  # noqa: F401  (registers tests.squares here)

    def job(fn: str, args: list[Any], kwargs: dict[str, Any]) -> Promise:
        data = json.dumps({"fn": fn, "args": args, "kwargs": kwargs})
        return Promise(id="j", state="pending", param=Value(data), value=Value(),
                       timeout_at=1, tags={}, ikey_create=None, ikey_settle=None,
                       created_at=0, settled_at=None)  # fmt: skip

    unknown = job("people.refund", ["B-2", 250.0], {"hours": 3})
    assert job_arguments(unknown, {}) == ({"hours": 3}, ["B-2", 250.0])
    # registered in this process: bound to its parameters by name
    assert job_arguments(job("tests.squares", [4], {"pause": 0.5})) == (
        {"n": 4, "pause": 0.5}, [],
    )  # fmt: skip
    assert call_text("people.refund", {"hours": 3}, 200, ["B-2", 250.0]) == (
        'people.refund("B-2", 250.0, hours=3)'
    )
