"""Snippets in the README come from files this test runs, so they cannot drift."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _snippet(path: Path, name: str) -> str:
    text = path.read_text()
    m = re.search(rf"# --8<-- \[start:{name}\]\n(.*?)# --8<-- \[end:{name}\]\n", text, re.S)
    assert m is not None, f"{path} has no snippet {name!r}"
    return m[1].rstrip("\n") + "\n"


def test_the_readme_quickstart_is_the_example_file_and_it_runs(tmp_path: Path) -> None:
    example = ROOT / "examples" / "promises_quickstart.py"
    assert _snippet(example, "quickstart") in (ROOT / "README.md").read_text()
    result = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "q.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'resolved {"rows": 42}'


def test_the_readme_commands_are_the_makefile_targets_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make run" in readme and "make test" in readme
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_durable_example_is_the_example_file_and_it_runs(tmp_path: Path) -> None:
    example = ROOT / "examples" / "durable_quickstart.py"
    assert _snippet(example, "durable") in (ROOT / "README.md").read_text()
    result = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "d.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "resolved True"


def test_every_code_block_in_the_readme_comes_from_a_tested_file_or_is_a_real_command() -> None:
    import shlex

    from agent_tools.cli import _parser

    readme = (ROOT / "README.md").read_text()
    sources = [
        p.read_text()
        for p in (ROOT / "examples").rglob("*")
        if p.suffix in (".py", ".json", ".toml")
    ]
    blocks = re.findall(r"```(\w*)\n(.*?)```", readme, re.S)
    assert len(blocks) >= 6
    for language, code in blocks:
        if language in ("python", "json", "toml"):
            assert any(code in source for source in sources), (
                f"README block not from a tested file:\n{code}"
            )
            continue
        assert language == "sh"
        for line in code.splitlines():
            command = line.split("#")[0].strip()
            if command.startswith("make "):
                assert command.split()[1] in ("run", "test")
                continue
            words = shlex.split(command)
            if words[0] == ".venv/bin/python":  # an example's demo: a file the tests run
                assert (ROOT / words[1]).is_file() and words[1].startswith("examples/"), line
                continue
            assert words[0] == "agent-tools", line
            _parser().parse_args(words[1:])  # exits (failing the test) on an unknown command
