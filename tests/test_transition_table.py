"""All 324 rows of the Durable Promise Specification's transition table, on every backend.

The table is data (``tests/data/durable-promise-transitions.md``, copied verbatim from
the specification); each row sets up its current state, applies its action, and checks
both the output (fresh OK, deduplicated OK, or the specific refusal) and the state and
keys afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from promises import (
    PromiseAlreadyExists,
    PromiseAlreadySettled,
    PromiseNotFound,
    SqlStore,
    Transition,
    open_store,
)
from tests.conftest import BACKENDS, FakeClock, PgSchema

TABLE = Path(__file__).parent / "data" / "durable-promise-transitions.md"
FAR = 10**12  # ms: a timeout no row reaches
KEYS = {"⊥": None, "ikc": "ikc", "ikc*": "ikc-other", "iku": "iku", "iku*": "iku-other"}
STATE_NAMES = {
    "Pending": "pending",
    "Resolved": "resolved",
    "Rejected": "rejected",
    "Canceled": "rejected_canceled",
    "Timedout": "rejected_timedout",
}
ACTIONS = {"Create": "create", "Resolve": "resolve", "Reject": "reject", "Cancel": "cancel"}


@dataclass(frozen=True)
class StateSpec:
    name: str  # "Init" or a key of STATE_NAMES
    ikey_create: str | None = None
    ikey_settle: str | None = None


@dataclass(frozen=True)
class Row:
    number: int
    current: StateSpec
    action: str
    ikey: str | None
    strict: bool
    after: StateSpec
    output: str

    @property
    def label(self) -> str:
        return f"row{self.number:03d}"


def _state(text: str) -> StateSpec:
    if text == "Init":
        return StateSpec("Init")
    m = re.fullmatch(r"(\w+)\(id, (\S+), (\S+)\)", text)
    if m is None:
        raise ValueError(f"cannot parse state {text!r}")
    return StateSpec(m[1], KEYS[m[2]], KEYS[m[3]])


def _rows() -> list[Row]:
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].isdigit():
            continue
        m = re.fullmatch(r"(\w+)\(id, (\S+), ([TF])\)", cells[2])
        if m is None:
            raise ValueError(f"cannot parse action {cells[2]!r}")
        rows.append(
            Row(
                int(cells[0]),
                _state(cells[1]),
                ACTIONS[m[1]],
                KEYS[m[2]],
                m[3] == "T",
                _state(cells[3]),
                cells[4],
            )
        )
    return rows


ROWS = _rows()


def test_the_table_has_all_324_rows() -> None:
    assert [r.number for r in ROWS] == list(range(1, 325))


@pytest.fixture(scope="module", params=BACKENDS)
def table_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SqlStore, FakeClock]]:
    clock = FakeClock()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('table')}/table.db"
        with open_store(url, clock=clock) as s:
            yield s, clock
    else:
        schema = PgSchema()
        with open_store(schema.url, clock=clock) as s:
            yield s, clock
        schema.drop()


def _set_up(store: SqlStore, clock: FakeClock, pid: str, spec: StateSpec) -> None:
    if spec.name == "Init":
        return
    if spec.name == "Timedout":
        store.create(pid, timeout_at=clock() + 1000, ikey=spec.ikey_create)
        clock.advance(1001)
        return
    store.create(pid, timeout_at=clock() + FAR, ikey=spec.ikey_create)
    settle = {"Resolved": store.resolve, "Rejected": store.reject, "Canceled": store.cancel}
    if spec.name in settle:
        settle[spec.name](pid, ikey=spec.ikey_settle)


def _act(store: SqlStore, clock: FakeClock, row: Row, pid: str) -> Transition:
    if row.action == "create":
        return store.create(pid, timeout_at=clock() + FAR, ikey=row.ikey, strict=row.strict)
    settle = {"resolve": store.resolve, "reject": store.reject, "cancel": store.cancel}[row.action]
    return settle(pid, ikey=row.ikey, strict=row.strict)


@pytest.mark.parametrize("row", ROWS, ids=[r.label for r in ROWS])
def test_transition_table_row(table_store: tuple[SqlStore, FakeClock], row: Row) -> None:
    store, clock = table_store
    pid = f"{row.label}-{id(store)}"
    _set_up(store, clock, pid, row.current)

    if row.output == "OK":
        assert _act(store, clock, row, pid).fresh is True
    elif row.output == "OK, Deduplicated":
        assert _act(store, clock, row, pid).deduplicated is True
    elif row.output == "KO, Already Init":
        with pytest.raises(PromiseNotFound):
            _act(store, clock, row, pid)
    else:
        m = re.fullmatch(r"KO, Already (\w+)", row.output)
        assert m is not None, row.output
        expected_error = PromiseAlreadyExists if row.action == "create" else PromiseAlreadySettled
        with pytest.raises(expected_error) as caught:
            _act(store, clock, row, pid)
        assert caught.value.state == STATE_NAMES[m[1]]
        assert pid in str(caught.value)

    if row.after.name == "Init":
        with pytest.raises(PromiseNotFound):
            store.get(pid)
        return
    after = store.get(pid)
    assert after.state == STATE_NAMES[row.after.name]
    assert after.ikey_create == row.after.ikey_create
    assert after.ikey_settle == row.after.ikey_settle
