"""What a model reads and gets back: schemas, annotations, advertised capabilities,
timers and schedules as first-class ids, inline answers (wait_s), the time, plain
errors, and approvals decided in the chat — through the SDK's real client, in both
protocol revisions where they differ."""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp_types import ElicitRequestParams, ElicitResult, ErrorData

from agent_tools import builtin_jobs  # noqa: F401  (registers the built-in kinds)
from agent_tools.jobs import LISTED_STATUSES, STATUSES
from agent_tools.server import build_server, worker_running
from promises import SqlStore, open_store
from promises.functions import REGISTRY
from tests import durable_jobs  # noqa: F401  (registers the test kinds)
from tests.conftest import START, FakeClock
from tests.waiting import eventually

pytestmark = pytest.mark.anyio
KINDS = {k: REGISTRY[k] for k in ("approval", "sleep", "tests.squares", "tests.fails")}
CORE_TOOLS = {
    "start_job",
    "probe_status",
    "await_result",
    "schedule",
    "list_jobs",
    "cancel_job",
    "current_time",
}
MODES = ["legacy", "2026-07-28"]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Any, SqlStore]]:
    with open_store(f"sqlite:///{tmp_path}/tools.db", poll_interval=0.05) as store:
        server = build_server(store, KINDS, await_cap_s=10, progress_every_s=0.1)
        async with worker_running(server.service):  # type: ignore[attr-defined]
            yield server, store


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return str(result.content[0].text)  # type: ignore[union-attr]


# -- schemas, annotations, what is advertised ------------------------------------------------


async def test_every_parameter_says_its_format_and_gives_an_example(
    served: tuple[Any, SqlStore],
) -> None:
    server, _ = served
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert CORE_TOOLS | {"start_approval", "start_sleep"} <= set(tools)
    for name in CORE_TOOLS | {"start_approval", "start_sleep"}:
        for param, schema in tools[name].input_schema["properties"].items():
            text = schema.get("description", "")
            assert "Example" in text or "e.g." in text, (name, param, text)
        lines = (tools[name].description or "").splitlines()
        assert lines and not any(line.startswith("    ") for line in lines), name  # dedented
        assert tools[name].output_schema is not None, name
    assert tools["start_approval"].description.startswith("Start an approval job")  # type: ignore[union-attr]


async def test_the_example_kinds_a_config_loads_describe_every_argument(tmp_path: Path) -> None:
    # The README's Claude Desktop config loads these: a model reads their arguments too.
    from agent_tools.cli import load_kinds

    with open_store(f"sqlite:///{tmp_path}/ex.db") as store:
        server = build_server(
            store, load_kinds(["examples.weather.jobs", "examples.approvals.refunds"])
        )
        async with Client(server) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("start_weather_gather", "start_refunds_refund"):
        for param, schema in tools[name].input_schema["properties"].items():
            text = schema.get("description", "")
            assert "Example" in text and "argument of the" not in text, (name, param, text)


async def test_the_built_in_kinds_bounds_are_in_their_schemas_and_enforced_at_start(
    served: tuple[Any, SqlStore],
) -> None:
    server, _ = served
    async with Client(server) as client:
        tools = {t.name: t.input_schema["properties"] for t in (await client.list_tools()).tools}
        assert tools["start_sleep"]["seconds"]["maximum"] == 10 * 365 * 86_400
        assert tools["start_approval"]["deadline_hours"]["exclusiveMinimum"] == 0
        assert tools["start_approval"]["question"]["minLength"] == 1
        refused = {
            "seconds must be at most 315360000 (got 1000000000000.0)": (
                "start_sleep", {"seconds": 1e12},
            ),
            "deadline_hours must be more than 0 (got -1)": (
                "start_approval", {"question": "Ship?", "deadline_hours": -1},
            ),
            "question needs at least 1 character(s)": ("start_approval", {"question": ""}),
            "must be at least 0 (got -5)": ("start_job", {"kind": "sleep", "args": {"seconds": -5}}),
        }  # fmt: skip
        for message, (tool, args) in refused.items():
            text = await error(client, tool, args)
            assert message in text, text
            assert "epoch" not in text and "timedelta" not in text, text
        # Refused at the call: nothing was started.
        listed = await call(client, "list_jobs", {})
        assert listed["jobs"] == []


async def test_known_sets_are_enums_and_enforced_bounds_are_in_the_schema(
    served: tuple[Any, SqlStore],
) -> None:
    server, _ = served
    async with Client(server) as client:
        tools = {t.name: t.input_schema["properties"] for t in (await client.list_tools()).tools}
        job_status = next(
            t for t in (await client.list_tools()).tools if t.name == "probe_status"
        ).output_schema
    assert tools["start_job"]["kind"]["enum"] == sorted(KINDS)
    status = tools["list_jobs"]["status"]["anyOf"][0]
    assert tuple(status["enum"]) == LISTED_STATUSES and "pending" not in status["enum"]
    assert (
        tools["list_jobs"]["limit"]["minimum"] == 1
        and tools["list_jobs"]["limit"]["maximum"] == 200
    )
    assert tools["await_result"]["timeout_s"]["maximum"] == 10  # the server's cap
    assert (
        tools["await_result"]["job_ids"]["minItems"] == 1
        and tools["await_result"]["job_ids"]["maxItems"] == 100
    )
    assert tools["start_job"]["wait_s"]["maximum"] == 45
    assert tools["schedule"]["delay_s"]["anyOf"][0]["minimum"] == 0
    assert job_status is not None
    assert tuple(job_status["$defs"]["JobStatus"]["properties"]["status"]["enum"]) == STATUSES


async def test_annotations_say_which_tools_only_read_and_which_destroy(
    served: tuple[Any, SqlStore],
) -> None:
    server, _ = served
    async with Client(server) as client:
        notes = {t.name: t.annotations for t in (await client.list_tools()).tools}
    for name in ("probe_status", "list_jobs", "await_result", "current_time"):
        assert notes[name] is not None and notes[name].read_only_hint is True, name  # type: ignore[union-attr]
    assert notes["cancel_job"].destructive_hint is True  # type: ignore[union-attr]
    for name in ("start_job", "start_sleep", "schedule"):
        assert notes[name].read_only_hint is False and notes[name].destructive_hint is False  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_server_advertises_only_what_it_serves(
    served: tuple[Any, SqlStore], mode: str
) -> None:
    server, _ = served
    async with Client(server, mode=mode) as client:  # type: ignore[arg-type]
        # auto: the client discovers 2026-07-28 (server/discover) and takes it.
        assert client.session.protocol_version == (
            "2025-11-25" if mode == "legacy" else "2026-07-28"
        )
        capabilities = client.session.server_capabilities
        assert capabilities is not None
        assert capabilities.tools is not None and not capabilities.tools.list_changed
        assert capabilities.prompts is None and capabilities.completions is None
        # Jobs are resources one can subscribe to (see the tests below), and nothing else.
        assert capabilities.resources is not None and capabilities.resources.subscribe is True
        assert not capabilities.resources.list_changed
        info = client.session.server_info
        assert info is not None and info.version == importlib.metadata.version("agent-tools")
        if mode == "legacy":
            assert capabilities.tasks is not None and capabilities.extensions in (None, {})
        else:
            assert capabilities.tasks is None
            assert capabilities.extensions == {"io.modelcontextprotocol/tasks": {}}


async def test_start_kind_tools_refuse_arguments_they_do_not_take(
    served: tuple[Any, SqlStore],
) -> None:
    server, _ = served
    async with Client(server) as client:
        message = await error(client, "start_sleep", {"seconds": 1, "bogus": 2})
        assert (
            message
            == "start_sleep does not take 'bogus'; its arguments are: seconds, job_id, wait_s"
        )
        assert "does not take 'secs'" in await error(
            client, "start_job", {"kind": "sleep", "secs": 1}
        )
        listed = (await call(client, "list_jobs", {}))["jobs"]
        assert listed == []  # nothing was started by the refused calls


# -- wait_s and current_time ------------------------------------------------------------------


async def test_wait_s_returns_a_quick_jobs_result_in_the_same_answer(
    served: tuple[Any, SqlStore],
) -> None:
    server, _ = served
    async with Client(server) as client:
        quick = await call(client, "start_tests_squares", {"n": 3, "wait_s": 20})
        assert quick["status"] == "completed" and quick["result"] == [0, 1, 4]
        failed = await call(
            client, "start_job", {"kind": "tests.fails", "args": {"message": "no"}, "wait_s": 20}
        )
        assert failed["status"] == "failed" and failed["error"]["message"] == "no"
        slow = await call(client, "start_sleep", {"seconds": 600, "wait_s": 0.2})
        assert slow["status"] in ("running", "waiting") and "result" not in slow
        assert "wait_s must be at most 45" in await error(
            client, "start_sleep", {"seconds": 1, "wait_s": 46}
        )


async def test_current_time_tells_the_servers_time_in_utc_and_a_zone(tmp_path: Path) -> None:
    clock = FakeClock(START)
    with open_store(f"sqlite:///{tmp_path}/t.db", clock=clock) as store:
        server = build_server(store, KINDS)
        async with Client(server) as client:
            now = await call(client, "current_time", {"timezone": "Asia/Tokyo"})
            timer = await call(client, "schedule", {"delay_s": 90})
            assert "unknown time zone 'Mars/Base'" in await error(
                client, "current_time", {"timezone": "Mars/Base"}
            )
    assert now == {
        "now": "2027-01-15T08:00:00.000Z",
        "timezone": "Asia/Tokyo",
        "local": "2027-01-15T17:00:00+09:00",
        "weekday": "Friday",
        "unix_s": START / 1000,
    }
    assert timer["now"] == now["now"] and timer["next_fire_at"] == "2027-01-15T08:01:30.000Z"


# -- timers and schedules ----------------------------------------------------------------------


async def test_a_cron_schedule_answers_to_probe_await_and_cancel(
    served: tuple[Any, SqlStore],
) -> None:
    server, _ = served
    async with Client(server) as client:
        made = await call(
            client, "schedule",
            {"cron": "0 9 * * 1-5", "kind": "tests.squares", "args": {"n": 2}, "id": "weekday", "timezone": "Europe/Lisbon"},
        )  # fmt: skip
        assert made["type"] == "schedule" and made["status"] == "waiting" and "now" in made
        probe = (await call(client, "probe_status", {"job_ids": ["weekday"]}))["jobs"][0]
        assert probe["type"] == "schedule" and probe["status"] == "waiting"
        assert probe["next_fire_at"] == made["next_fire_at"] == probe["waiting_for"]["time"]
        assert probe["kind"] == "tests.squares" and probe["cron"] == "0 9 * * 1-5"
        waited = await call(client, "await_result", {"job_ids": ["weekday"], "timeout_s": 10})
        assert [j["job_id"] for j in waited["pending"]] == ["weekday"] and waited["done"] == []
        assert (await call(client, "cancel_job", {"job_id": "weekday"}))["status"] == "cancelled"
        assert "already cancelled" in await error(client, "cancel_job", {"job_id": "weekday"})
        again = await error(
            client,
            "schedule",
            {
                "cron": "0 9 * * 1-5",
                "kind": "tests.squares",
                "args": {"n": 2},
                "id": "weekday",
                "timezone": "Europe/Lisbon",
            },
        )
        assert "was cancelled" in again and "new id" in again


async def test_a_schedule_tells_its_last_run_and_its_last_error(tmp_path: Path) -> None:
    from promises import Schedules
    from tests.conftest import raw

    clock = FakeClock(START)
    with open_store(f"sqlite:///{tmp_path}/s.db", clock=clock) as store:
        server = build_server(store, KINDS)
        service = server.service  # type: ignore[attr-defined]
        async with Client(server) as client:
            for name in ("good", "broken"):
                await call(client, "schedule", {"cron": "* * * * *", "kind": "tests.squares",
                                                "args": {"n": 2}, "id": name})  # fmt: skip
            # broken's arguments stop fitting its kind (a new release, say)
            raw(store, """UPDATE schedules SET args = '{"args":[],"kwargs":{"m":1}}' """
                       "WHERE id = 'broken'")  # fmt: skip
            clock.advance(61_000)
            assert Schedules(service.runtime).fire_due() == 1
            good, broken = (await call(client, "probe_status", {"job_ids": ["good", "broken"]}))[
                "jobs"
            ]
        assert good["last_run"]["job_id"] == good["last_job_id"] and "last_error" not in good
        assert good["last_run"]["at"] == "2027-01-15T08:01:00.000Z"
        assert broken["status"] == "waiting" and "last_run" not in broken
        assert (
            broken["failures"] == 1
            and "arguments do not fit tests.squares" in (broken["last_error"]["message"])
        )


async def test_an_id_names_one_job_timer_or_schedule(served: tuple[Any, SqlStore]) -> None:
    server, _ = served
    async with Client(server) as client:
        await call(client, "schedule", {"delay_s": 600, "id": "tea"})
        await call(client, "schedule", {"cron": "0 9 * * *", "kind": "tests.squares",
                                        "args": {"n": 1}, "id": "daily"})  # fmt: skip
        await call(client, "start_job", {"kind": "tests.squares", "args": {"n": 1},
                                         "job_id": "sq"})  # fmt: skip
        timer = await error(client, "start_job", {"kind": "tests.squares", "args": {"n": 1},
                                                  "job_id": "tea"})  # fmt: skip
        assert timer.startswith("the id 'tea' is already used by a timer (waiting)")
        schedule = await error(client, "start_sleep", {"seconds": 1, "job_id": "daily"})
        assert schedule.startswith("the id 'daily' is already used by a cron schedule (active)")
        other_kind = await error(client, "start_sleep", {"seconds": 1, "job_id": "sq"})
        assert "already used by a job of kind 'tests.squares'" in other_kind
        same_kind = await error(client, "start_job", {"kind": "tests.squares", "args": {"n": 2},
                                                      "job_id": "sq"})  # fmt: skip
        assert same_kind.startswith("job 'sq' already exists with other arguments")
        [daily] = (await call(client, "probe_status", {"job_ids": ["daily"]}))["jobs"]
        assert daily["type"] == "schedule"  # still the schedule: no job took its id


async def test_rescheduling_a_cancelled_timer_id_is_refused_not_answered_waiting(
    served: tuple[Any, SqlStore],
) -> None:
    server, _ = served
    async with Client(server) as client:
        await call(client, "schedule", {"delay_s": 600, "id": "remind-ana"})
        await call(client, "cancel_job", {"job_id": "remind-ana"})
        message = await error(client, "schedule", {"delay_s": 600, "id": "remind-ana"})
        assert (
            message
            == "the id 'remind-ana' is already used by a timer that is cancelled; choose a new id"
        )
        timers = await call(client, "list_jobs", {"type": "timer"})
        assert [(t["job_id"], t["status"]) for t in timers["jobs"]] == [("remind-ana", "cancelled")]
        assert (await call(client, "list_jobs", {}))["jobs"] == []  # jobs only by default


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            {"cron": "0 0 9 * * *", "kind": "sleep", "args": {"seconds": 1}},
            "cron must have exactly five fields (seconds are not supported",
        ),
        (
            {"cron": "* * * * * *", "kind": "sleep", "args": {"seconds": 1}},
            "cron must have exactly five fields",
        ),
        ({"delay_s": float("nan")}, "delay_s"),
        ({"delay_s": float("inf")}, "delay_s"),
        ({"delay_s": 1e300}, "delay_s must be at most"),
        (
            {
                "cron": "0 9 * * *",
                "kind": "sleep",
                "args": {"seconds": 1},
                "timezone": "x" * 100_000,
            },
            "timezone takes at most 64 character(s)",
        ),
        (
            {
                "cron": "0 9 * * *",
                "kind": "sleep",
                "args": {"seconds": 1},
                "timezone": "../../etc/passwd",
            },
            "unknown time zone",
        ),
        ({"delay_s": 5, "args": {"seconds": 1}}, "args are the arguments of a job: give kind too"),
        ({"delay_s": 5, "at": "2030-01-01T00:00:00Z"}, "give exactly one of at"),
        ({"at": "0001-01-01T00:00:00Z"}, "is out of range; give a time between 1970 and 9999"),
        ({"delay_s": 5, "id": "daily.3"}, "may not end in '.<digits>'"),
        (
            {"cron": "61 * * * *", "kind": "sleep", "args": {"seconds": 1}},
            "a field is out of range: minute 0-59",
        ),
        (
            {"cron": "0 0 31 2 *", "kind": "sleep", "args": {"seconds": 1}},
            "never fires: no date matches it",
        ),
        (
            {"delay_s": 5, "kind": "sleep", "args": {"secs": 1}},
            "missing a required argument: 'seconds'; it takes seconds",
        ),
    ],
)
async def test_bad_schedules_get_clear_errors(
    served: tuple[Any, SqlStore], args: dict[str, Any], expected: str
) -> None:
    server, _ = served
    async with Client(server) as client:
        message = await error(client, "schedule", args)
    assert expected in message
    for internal in (
        "milliseconds",
        "idempotency",
        "pydantic",
        "For further information",
        "Traceback",
        "FieldInfo",
        "is not acceptable",
        "failed to find",
    ):
        assert internal not in message, message


# -- errors without internals ----------------------------------------------------------------


async def test_errors_name_the_problem_without_internals(served: tuple[Any, SqlStore]) -> None:
    server, _ = served
    async with Client(server) as client:
        await call(
            client, "start_job", {"kind": "tests.squares", "args": {"n": 3}, "job_id": "same"}
        )
        conflict = await error(
            client, "start_job", {"kind": "tests.squares", "args": {"n": 4}, "job_id": "same"}
        )
        assert conflict.startswith("job 'same' already exists with other arguments")
        assert "properties" not in conflict and "{" not in conflict  # no schema dump
        messages = [
            conflict,
            await error(client, "cancel_job", {"job_id": ""}),
            await error(client, "start_job", {"kind": "tests.squares", "args": {"n": "three"}}),
            await error(client, "probe_status", {"job_ids": "job-1"}),
            await error(
                client,
                "start_job",
                {"kind": "tests.squares", "args": {"n": 1}, "job_id": "x" * 300},
            ),
        ]
    assert (
        messages[1] == "cancel_job got a bad argument: job_id needs at least 1 character(s) (got 0)"
    )
    for message in messages:
        for internal in (
            "milliseconds",
            "idempotency",
            "errors.pydantic.dev",
            "Error executing tool",
            "already unknown",
        ):
            assert internal not in message, message


# -- approvals decided in the chat -------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_await_result_asks_the_person_in_the_chat_when_the_client_can(
    served: tuple[Any, SqlStore], mode: str
) -> None:
    server, store = served
    asked: list[str] = []

    async def person(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"approved": True, "comment": "go"})

    async with Client(server, mode=mode, elicitation_callback=person) as client:  # type: ignore[arg-type]
        job = await call(client, "start_approval", {"question": "Publish the report?"})

        async def waiting() -> dict[str, Any] | None:  # the job waits for the person
            probe = (await call(client, "probe_status", {"job_ids": [job["job_id"]]}))["jobs"][0]
            return probe if probe["status"] == "waiting" else None

        probe = await eventually(waiting, what="the approval job waits")
        done = await call(client, "await_result", {"job_ids": [job["job_id"]], "timeout_s": 10})
    assert asked == ["Publish the report?"]
    assert done["done"][0]["result"] == {
        "decided": True,
        "approved": True,
        "comment": "go",
        "by": "mcp:elicitation",
    }
    # The same durable promise the link and the CLI settle.
    assert store.get(probe["waiting_for"]["approval"]).state == "resolved"


async def test_forms_nobody_answers_end_with_the_call_however_many(
    served: tuple[Any, SqlStore],
) -> None:
    # Two approvals, a person who answers neither form: the forms share the call's one
    # bound (the cap, 10 s here), so the call does not take a cap per form.
    server, _ = served
    asked: list[str] = []
    never = asyncio.Event()

    async def away(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        await never.wait()
        return ElicitResult(action="cancel")

    async with Client(server, mode="legacy", elicitation_callback=away) as client:  # type: ignore[arg-type]
        ids = [(await call(client, "start_approval", {"question": f"Q{n}?"}))["job_id"]
               for n in (1, 2)]  # fmt: skip

        async def both_wait() -> bool:
            jobs = (await call(client, "probe_status", {"job_ids": ids}))["jobs"]
            return all(j["status"] == "waiting" for j in jobs)

        await eventually(both_wait, what="both approvals wait")
        waited = await call(client, "await_result", {"job_ids": ids, "timeout_s": 1})
    assert asked and len(waited["pending"]) == 2  # still open: the link or CLI can decide
    assert waited["waited_s"] < 10 + 4, waited["waited_s"]


async def test_cancel_job_refuses_a_jobs_own_step(served: tuple[Any, SqlStore]) -> None:
    server, store = served
    async with Client(server) as client:
        job = await call(client, "start_sleep", {"seconds": 600, "job_id": "nap"})

        async def sleeping() -> bool:
            [probe] = (await call(client, "probe_status", {"job_ids": ["nap"]}))["jobs"]
            return probe["status"] == "waiting"

        await eventually(sleeping, what="the job sleeps")
        refused = await error(client, "cancel_job", {"job_id": "nap.0"})
        assert "is a step of the job 'nap'" in refused and "cancel the job 'nap'" in refused
        [probe] = (await call(client, "probe_status", {"job_ids": [job["job_id"]]}))["jobs"]
        assert probe["status"] == "waiting" and store.get("nap.0").pending


async def test_a_client_without_elicitation_keeps_the_link(served: tuple[Any, SqlStore]) -> None:
    server, _ = served
    async with Client(server) as client:
        job = await call(client, "start_approval", {"question": "Publish?"})
        waited = await call(client, "await_result", {"job_ids": [job["job_id"]], "timeout_s": 1})
        assert waited["pending"][0]["job_id"] == job["job_id"]


async def test_schedules_alternatives_are_in_its_schema(served: tuple[Any, SqlStore]) -> None:
    server, _ = served
    async with Client(server) as client:
        schema = next(
            t for t in (await client.list_tools()).tools if t.name == "schedule"
        ).input_schema
    assert "oneOf" not in schema and "anyOf" not in schema  # top-level ones break some clients
    assert set(schema["dependentSchemas"]) == {"at", "delay_s", "cron", "args"}
    # The rules mean what they say (a JSON Schema 2020-12 validator; mcp depends on it).
    import jsonschema

    check = jsonschema.Draft202012Validator(schema)
    assert check.is_valid({"at": "2030-01-01T09:00:00Z"})
    assert check.is_valid({"cron": "0 9 * * *", "kind": "sleep", "args": {"seconds": 1}})
    assert not check.is_valid({"at": "2030-01-01T09:00:00Z", "delay_s": 5})
    assert not check.is_valid({"cron": "0 9 * * *"})
    assert not check.is_valid({"delay_s": 5, "args": {"seconds": 1}})
    assert not check.is_valid({"delay_s": 5, "kind": "nope"})
    # Null is how some clients and models leave an argument out; the server takes it so,
    # and the schema must not refuse what the server takes.
    for left_out in (
        {"delay_s": 5, "at": None, "cron": None, "kind": None, "args": None, "id": None},
        {"at": "2030-01-01T09:00:00Z", "delay_s": None},
        {"cron": "0 9 * * *", "kind": "sleep", "args": {"seconds": 1}, "at": None, "delay_s": None},
        {"delay_s": 5, "kind": None},
    ):
        assert check.is_valid(left_out), left_out
        async with Client(server) as client:
            answer = await client.call_tool("schedule", left_out)
        assert not answer.is_error, (left_out, answer.content)
    assert not check.is_valid({"cron": "0 9 * * *", "kind": None})
    assert not check.is_valid({"delay_s": 5, "args": {"seconds": 1}, "kind": None})


# -- jobs as resources, with subscriptions ------------------------------------------------------


async def _waiting_approval(client: Client, question: str) -> tuple[str, str]:
    job = await call(client, "start_approval", {"question": question})
    seen: list[Any] = []  # what it waited for before (each change once)
    last: dict[str, Any] = {}

    async def waiting() -> tuple[str, str] | None:  # the job waits for the person
        probe = last["probe"] = (await call(client, "probe_status", {"job_ids": [job["job_id"]]}))[
            "jobs"
        ][0]
        if "approval" in (probe.get("waiting_for") or {}):
            return job["job_id"], probe["waiting_for"]["approval"]
        if not seen or seen[-1] != probe.get("waiting_for"):
            seen.append(probe.get("waiting_for"))
        return None

    try:
        return await eventually(waiting, what="the approval job waits for its approval")
    except TimeoutError:
        raise AssertionError(
            f"the approval job never waited for its approval: {last.get('probe')} {seen}"
        ) from None


async def test_a_job_is_a_resource_and_a_2025_subscriber_hears_when_it_finishes(
    served: tuple[Any, SqlStore],
) -> None:
    import json
    import warnings

    from mcp.shared.exceptions import MCPDeprecationWarning
    from mcp_types import ResourceUpdatedNotification

    from promises import decide

    server, store = served
    updated: list[str] = []
    heard = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            heard.set()

    async with Client(server, mode="legacy", message_handler=on_message) as client:
        templates = await client.list_resource_templates()
        assert [t.uri_template for t in templates.resource_templates] == ["job://{job_id}"]
        job_id, approval_id = await _waiting_approval(client, "Ship it?")
        read = await client.read_resource(f"job://{job_id}")
        assert json.loads(read.contents[0].text)["status"] == "waiting"  # type: ignore[union-attr]
        with warnings.catch_warnings():  # deprecated for 2026-07-28; this is a 2025 client
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.session.subscribe_resource(f"job://{job_id}")
        await asyncio.to_thread(decide, store, approval_id, approved=True, by="test")
        with anyio_fail_after(10):
            await heard.wait()
        read = await client.read_resource(f"job://{job_id}")
        assert json.loads(read.contents[0].text)["status"] == "completed"  # type: ignore[union-attr]
        from mcp.shared.exceptions import MCPError

        with pytest.raises(MCPError, match="no job, timer or schedule has the id 'nobody'"):
            await client.read_resource("job://nobody")  # not found, not a made-up status
    assert updated == [f"job://{job_id}"]


async def test_a_2026_client_listens_for_a_job_resource(served: tuple[Any, SqlStore]) -> None:
    from mcp.client.subscriptions import ResourceUpdated

    from promises import decide

    server, store = served
    async with Client(server, mode="2026-07-28") as client:
        job_id, approval_id = await _waiting_approval(client, "Ship it?")
        uri = f"job://{job_id}"
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            await asyncio.to_thread(decide, store, approval_id, approved=False, by="test")
            with anyio_fail_after(10):
                event = await subscription.__anext__()
        assert event == ResourceUpdated(uri=uri)
        status = (await call(client, "probe_status", {"job_ids": [job_id]}))["jobs"][0]
        assert status["status"] == "completed" and status["result"]["approved"] is False


def anyio_fail_after(seconds: float) -> Any:
    import anyio

    return anyio.fail_after(seconds)
