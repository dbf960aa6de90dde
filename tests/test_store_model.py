"""Random sequences of create / settle / get / search / sweep / time-advance against a
small reference model of DESIGN §2, compared at every step, on every backend.

The model is written from the prose rules, independently of ``promises.transitions``.
Each hypothesis example works under its own id prefix, so one store serves them all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from promises import (
    TIMER_TAG,
    PromiseAlreadyExists,
    PromiseAlreadySettled,
    PromiseError,
    PromiseNotFound,
    SqlStore,
    Transition,
    Value,
    open_store,
)
from tests.conftest import FakeClock

SETTLES = {"resolve": "resolved", "reject": "rejected", "cancel": "rejected_canceled"}

IDS = ["a", "b", "c"]
ids = st.sampled_from(IDS)
keys = st.sampled_from([None, "k1", "k2"])
strict = st.booleans()


@dataclass(frozen=True)
class Model:
    state: str
    ikey_create: str | None
    ikey_settle: str | None
    timeout_at: int
    timer: bool
    kind: str
    created_at: int
    settled_at: int | None
    value: str | None
    order: int

    def at(self, now: int) -> Model:
        if self.state == "pending" and now >= self.timeout_at:
            return replace(
                self,
                state="resolved" if self.timer else "rejected_timedout",
                settled_at=max(self.timeout_at, self.created_at),
            )
        return self


def _same_key(stored: str | None, given: str | None) -> bool:
    return stored is not None and stored == given


def run_model_test(store: SqlStore, clock: FakeClock, examples: int) -> None:
    class StoreMachine(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.prefix = f"m{uuid.uuid4().hex[:8]}-"
            self.model: dict[str, Model] = {}
            self.created = 0

        def _expect(self, outcome: object, call: object) -> None:
            try:
                result = call()  # type: ignore[operator]
            except PromiseError as exc:
                got: object = (type(exc), getattr(exc, "state", None))
            else:
                assert isinstance(result, Transition)
                got = "fresh" if result.fresh else "dedup"
            assert got == outcome

        @rule(
            pid=ids,
            ikey=keys,
            strict=strict,
            delta=st.sampled_from([1, 40, 10**9]),
            timer=st.booleans(),
            kind=st.sampled_from(["x", "y"]),
        )
        def create(
            self, pid: str, ikey: str | None, strict: bool, delta: int, timer: bool, kind: str
        ) -> None:
            now = clock()
            current = self.model.get(pid)
            tags = {"kind": kind, **({TIMER_TAG: "true"} if timer else {})}
            if current is None:
                outcome: object = "fresh"
                self.model[pid] = Model(
                    "pending", ikey, None, now + delta, timer, kind, now, None, None, self.created
                )
                self.created += 1
            else:
                m = current.at(now)
                self.model[pid] = m
                ok = _same_key(m.ikey_create, ikey) and (m.state == "pending" or not strict)
                outcome = "dedup" if ok else (PromiseAlreadyExists, m.state)
            self._expect(
                outcome,
                lambda: store.create(
                    self.prefix + pid, timeout_at=now + delta, ikey=ikey, strict=strict, tags=tags
                ),
            )

        @rule(
            pid=ids,
            action=st.sampled_from(sorted(SETTLES)),
            ikey=keys,
            strict=strict,
            data=st.sampled_from([None, "1", '"x"']),
        )
        def settle(
            self, pid: str, action: str, ikey: str | None, strict: bool, data: str | None
        ) -> None:
            now = clock()
            current = self.model.get(pid)
            if current is None:
                outcome: object = (PromiseNotFound, None)
            else:
                m = current.at(now)
                if m.state == "pending":
                    outcome = "fresh"
                    m = replace(
                        m, state=SETTLES[action], ikey_settle=ikey, settled_at=now, value=data
                    )
                elif m.state == "rejected_timedout":
                    outcome = "dedup" if not strict else (PromiseAlreadySettled, m.state)
                elif m.state == SETTLES[action]:
                    outcome = (
                        "dedup"
                        if _same_key(m.ikey_settle, ikey)
                        else (PromiseAlreadySettled, m.state)
                    )
                else:
                    ok = _same_key(m.ikey_settle, ikey) and not strict
                    outcome = "dedup" if ok else (PromiseAlreadySettled, m.state)
                self.model[pid] = m
            settle = getattr(store, action)
            self._expect(
                outcome,
                lambda: settle(self.prefix + pid, value=Value(data), ikey=ikey, strict=strict),
            )

        @rule(ms=st.sampled_from([0, 1, 39, 40, 41, 1000]))
        def advance(self, ms: int) -> None:
            clock.advance(ms)

        @rule()
        def sweep(self) -> None:
            store.sweep()

        @rule(
            state=st.sampled_from([None, "pending", "resolved", "rejected"]),
            kind=st.sampled_from([None, "x", "y"]),
            limit=st.sampled_from([1, 2, 1000]),
        )
        def search(self, state: str | None, kind: str | None, limit: int) -> None:
            now = clock()
            expected = []
            for pid, m in sorted(self.model.items(), key=lambda kv: -kv[1].order):
                s = m.at(now).state
                wanted = (
                    state is None
                    or s == state
                    or (state == "rejected" and s.startswith("rejected"))
                )
                if wanted and (kind is None or m.kind == kind):
                    expected.append(self.prefix + pid)
            got, cursor = [], None
            while True:
                page = store.search(
                    self.prefix + "*",
                    state=state,
                    tags=None if kind is None else {"kind": kind},  # type: ignore[arg-type]
                    limit=limit,
                    cursor=cursor,
                )
                got += [p.id for p in page.promises]
                if page.cursor is None:
                    break
                cursor = page.cursor
            assert got == expected

        @invariant()
        def every_promise_matches_the_model(self) -> None:
            if not hasattr(self, "model"):
                return
            now = clock()
            for pid in IDS:
                if pid not in self.model:
                    with pytest.raises(PromiseNotFound):
                        store.get(self.prefix + pid)
                    continue
                m, p = self.model[pid].at(now), store.get(self.prefix + pid)
                assert (
                    p.state,
                    p.ikey_create,
                    p.ikey_settle,
                    p.timeout_at,
                    p.created_at,
                    p.settled_at,
                ) == (
                    m.state,
                    m.ikey_create,
                    m.ikey_settle,
                    m.timeout_at,
                    m.created_at,
                    m.settled_at,
                )
                assert p.value.data == m.value

    run_state_machine_as_test(
        StoreMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )


def test_the_store_behaves_like_the_reference_model(store_url: str) -> None:
    clock = FakeClock()
    examples = 100 if store_url.startswith("sqlite") else 40
    with open_store(store_url, clock=clock) as store:
        run_model_test(store, clock, examples)
