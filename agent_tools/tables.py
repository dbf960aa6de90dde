"""Plain-text tables and key/value blocks for the terminal (``--json`` prints the data
instead). Columns are sized to their content; on a terminal the last column is cut to
its width, never wrapped. Into a pipe or a file nothing is cut: whatever reads it gets
every character."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _width() -> int | None:
    """The terminal's width, or None when stdout is not a terminal."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((120, 24)).columns


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None) -> str:
    width = width or _width()
    cells = [[str(c).replace("\n", " ") for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row[:-1]):
            widths[i] = min(max(widths[i], len(cell)), 48)
    lines = []
    for row in [list(headers), *cells]:
        parts = [_cut(c, widths[i]).ljust(widths[i]) for i, c in enumerate(row[:-1])]
        line = "  ".join([*parts, row[-1]]) if row else ""
        lines.append(line.rstrip() if width is None else _cut(line.rstrip(), max(width, 40)))
    return "\n".join(lines)


def block(pairs: Sequence[tuple[str, str]]) -> str:
    """``key   value`` lines; a value with several lines is indented under its key."""
    if not pairs:
        return ""
    pad = max(len(k) for k, _ in pairs) + 2
    lines = []
    for key, value in pairs:
        first, *rest = str(value).splitlines() or [""]
        lines.append(f"{key.ljust(pad)}{first}")
        lines.extend(" " * pad + line for line in rest)
    return "\n".join(lines)
