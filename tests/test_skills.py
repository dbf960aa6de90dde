"""skills/: front matter, every tool and argument a skill names against the server's
live tool list, and code that comes from files the tests run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

import promises
from agent_tools.cli import load_kinds
from agent_tools.server import build_server
from promises import open_store

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent
SKILLS = sorted((ROOT / "skills").glob("*/SKILL.md"))
TESTED_SOURCES = [p.read_text() for p in (ROOT / "examples").rglob("*.py")]


def front_matter(text: str) -> dict[str, str]:
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match is not None, "SKILL.md must start with --- front matter ---"
    fields = {}
    for line in match[1].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def test_there_are_the_four_skills() -> None:
    assert [p.parent.name for p in SKILLS] == [
        "durable-jobs",
        "human-approvals",
        "scheduling-and-reminders",
        "writing-durable-jobs",
    ]


@pytest.mark.parametrize("skill", SKILLS, ids=lambda p: p.parent.name)
def test_front_matter_names_the_skill_and_says_when_to_load_it(skill: Path) -> None:
    fields = front_matter(skill.read_text())
    assert set(fields) == {"name", "description"}
    assert fields["name"] == skill.parent.name
    assert fields["description"].startswith("Use when") and 40 < len(fields["description"]) <= 1024


@pytest.fixture
async def live_tools(tmp_path: Path) -> dict[str, set[str]]:
    with open_store(f"sqlite:///{tmp_path}/skills.db") as store:
        server = build_server(
            store, load_kinds(["examples.weather.jobs", "examples.approvals.refunds"])
        )
        async with Client(server) as client:
            return {
                t.name: set(t.input_schema.get("properties", {}))
                for t in (await client.list_tools()).tools
            }


def tool_references(text: str) -> list[tuple[str, list[str]]]:
    """Inline code like `start_job(kind, args)`: a name and its argument names."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found = []
    for name, inside in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)\(([^`]*)\)`", prose):
        args = [
            re.split(r"[=?: ]", a.strip())[0]
            for a in inside.split(",")
            if a.strip() and a.strip() != "..."
        ]
        found.append((name, args))
    return found


@pytest.mark.parametrize("skill", SKILLS, ids=lambda p: p.parent.name)
async def test_every_tool_and_argument_a_skill_names_exists(
    skill: Path, live_tools: dict[str, set[str]]
) -> None:
    references = tool_references(skill.read_text())
    python_api = set(promises.__all__)
    checked = 0
    for name, args in references:
        if name in python_api:
            continue  # the Python API a job author uses, checked by the type checker
        assert name in live_tools, (
            f"{skill.parent.name} names a tool {name!r} the server does not have"
        )
        unknown = [a for a in args if a not in live_tools[name]]
        assert not unknown, f"{skill.parent.name}: {name} has no argument {unknown}"
        checked += 1
    if skill.parent.name != "writing-durable-jobs":
        assert checked >= 3


def code_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", text, re.S)


@pytest.mark.parametrize("skill", SKILLS, ids=lambda p: p.parent.name)
def test_code_in_a_skill_comes_from_a_tested_example(skill: Path) -> None:
    blocks = code_blocks(skill.read_text())
    assert blocks, "each skill shows real code"
    for language, code in blocks:
        assert language == "python"
        assert any(code in source for source in TESTED_SOURCES), f"not from a tested file:\n{code}"


def test_the_tool_reference_finder_finds_tools_and_arguments() -> None:
    found: list[tuple[str, Any]] = tool_references(
        "call `start_job(kind, args, job_id?)` then `x.y(z)`"
    )
    assert found == [("start_job", ["kind", "args", "job_id"])]
