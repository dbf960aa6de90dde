"""Every statement the store runs, written once, rendered once per backend.

The hot paths run these through the DB-API drivers directly: no per-call statement
building or compilation. They are plain SQL that SQLite and PostgreSQL share, with
``:name`` parameters (turned into ``%(name)s`` for psycopg) and the few differences
marked. ``tests/test_sql.py`` prepares every one of them against a fresh database on
both backends, so a misspelled column fails the suite, not a user.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from promises.backends import Dialect

PROMISE_COLUMNS = (
    "seq, id, state, timer, param_headers, param_data, value_headers, value_data, "
    "timeout_at, tags, ikey_create, ikey_settle, created_at, settled_at"
)
TASK_COLUMNS = (
    "id, kind, state, ready_at, waiting_on, owner, attempts, step_id, step_attempt, "
    "progress, updated_at, lease_expires_at, counter"
)
SCHEDULE_COLUMNS = (
    "id, cron, timezone, fn, args, state, next_fire_at, created_at, last_fired_at, "
    "last_job_id, last_error, last_error_at, failures"
)
WORKER_COLUMNS = "id, host, pid, kinds, listener, started_at, seen_at, stopped_at"

_PARAM = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def _prefixed(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


class Statements:
    """The statements for one backend, as strings its driver takes."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        pg = dialect == "postgresql"
        for_update = " FOR UPDATE" if pg else ""  # SQLite: the write lock covers everything
        skip_locked = " FOR UPDATE SKIP LOCKED" if pg else ""
        for_share = " FOR SHARE" if pg else ""
        in_ids = "= ANY(:ids)" if pg else "IN (SELECT value FROM json_each(:ids))"
        in_kinds = "= ANY(:kinds)" if pg else "IN (SELECT value FROM json_each(:kinds))"
        # Ids in a range: a job's children are the ids between "job." and "job/". On
        # PostgreSQL the comparison uses the C collation, which the id index has too.
        collate = ' COLLATE "C"' if pg else ""
        settle_time = "CASE WHEN created_at > :now THEN created_at ELSE :now END"
        timeout_state = "CASE WHEN timer THEN 'resolved' ELSE 'rejected_timedout' END"
        timeout_time = "CASE WHEN created_at > timeout_at THEN created_at ELSE timeout_at END"
        p = PROMISE_COLUMNS

        # -- promises ---------------------------------------------------------------
        self.insert_promise = (
            "INSERT INTO promises (id, state, timer, param_headers, param_data, value_headers, "
            "value_data, timeout_at, tags, ikey_create, ikey_settle, created_at, settled_at) "
            "VALUES (:id, :state, :timer, :param_headers, :param_data, :value_headers, "
            ":value_data, :timeout_at, :tags, :ikey_create, :ikey_settle, :created_at, "
            ":settled_at) ON CONFLICT (id) DO NOTHING RETURNING seq"
        )
        self.insert_tag = (
            "INSERT INTO promise_tags (seq, key, value, pending) VALUES (:seq, :key, :value, "
            ":pending)"
        )
        self.settle = (
            f"UPDATE promises SET state = :state, value_headers = :headers, value_data = :data, "
            f"ikey_settle = :ikey, settled_at = {settle_time} "
            f"WHERE id = :id AND state = 'pending' AND timeout_at > :now RETURNING {p}"
        )
        self.get = f"SELECT {p} FROM promises WHERE id = :id"
        self.get_for_update = self.get + for_update
        self.get_many = f"SELECT {p} FROM promises WHERE id {in_ids}"
        self.children = f"SELECT {p} FROM promises WHERE id{collate} >= :lo AND id{collate} < :hi"
        self.persist_timeouts = (
            f"UPDATE promises SET state = {timeout_state}, settled_at = {timeout_time} "
            f"WHERE id {in_ids} AND state = 'pending' AND timeout_at <= :now RETURNING {p}"
        )
        self.sweep = (
            f"UPDATE promises SET state = {timeout_state}, settled_at = {timeout_time} "
            "WHERE seq IN (SELECT seq FROM promises WHERE state = 'pending' "
            "AND timeout_at <= :now ORDER BY timeout_at LIMIT :batch) AND state = 'pending' "
            "RETURNING id"
        )
        self.any_expired = (
            "SELECT seq FROM promises WHERE state = 'pending' AND timeout_at <= :now LIMIT 1"
        )
        self.settled_among = (
            f"SELECT id FROM promises WHERE id {in_ids} "
            "AND (state <> 'pending' OR timeout_at <= :now)"
        )
        self.collect = (
            "DELETE FROM promises WHERE seq IN (SELECT seq FROM promises "
            "WHERE settled_at < :cutoff LIMIT :batch) AND state <> 'pending'"
        )
        self.lock_promise = f"SELECT state FROM promises WHERE id = :id{for_share}"
        self.waited_on = f"SELECT DISTINCT kind FROM tasks WHERE waiting_on {in_ids}"

        # How many promises carry a tag key, per its value and their state (the tag
        # index, no promise decoded): the dashboard's and health's counts.
        self.count_by_tag = (
            "SELECT t.value, p.state, count(*) FROM promise_tags t "
            "JOIN promises p ON p.seq = t.seq WHERE t.key = :key GROUP BY t.value, p.state"
        )

        # -- tasks ------------------------------------------------------------------
        t = TASK_COLUMNS
        self.insert_task = (
            "INSERT INTO tasks (id, kind, state, ready_at, waiting_on, owner, owner_host, "
            "owner_pid, lease_expires_at, counter, attempts, step_id, step_attempt, progress, "
            "updated_at) VALUES (:id, :kind, :state, :ready_at, NULL, :owner, :owner_host, "
            ":owner_pid, :lease_expires_at, :counter, :attempts, NULL, 0, NULL, :now) "
            "ON CONFLICT (id) DO NOTHING"
        )
        self.fence = (
            "UPDATE tasks SET updated_at = :now "
            "WHERE id = :id AND counter = :counter AND state = 'claimed'"
        )
        # The fence as a read: whether the claim still holds the task, writing nothing.
        self.held = (
            "SELECT count(*) FROM tasks WHERE id = :id AND counter = :counter AND state = 'claimed'"
        )
        self.ready_ids = (
            f"SELECT id FROM tasks WHERE state = 'ready' AND ready_at <= :now AND kind {in_kinds} "
            f"ORDER BY ready_at LIMIT :limit{skip_locked}"
        )
        self.expired_ids = (
            "SELECT id FROM tasks WHERE state = 'claimed' AND lease_expires_at <= :now "
            f"AND kind {in_kinds} LIMIT :limit{skip_locked}"
        )
        self.claim = (
            "UPDATE tasks SET state = 'claimed', owner = :owner, owner_host = :host, "
            "owner_pid = :pid, lease_expires_at = :lease_end, counter = counter + 1, "
            "attempts = attempts + 1, waiting_on = NULL, updated_at = :now "
            f"WHERE id {in_ids} "
            "RETURNING id, counter, attempts, step_id, step_attempt, kind, ready_at"
        )
        self.suspend = (
            "UPDATE tasks SET state = 'ready', ready_at = :ready_at, waiting_on = :waiting_on, "
            "owner = NULL, owner_host = NULL, owner_pid = NULL, lease_expires_at = NULL, "
            "updated_at = :now WHERE id = :id AND counter = :counter AND state = 'claimed'"
        )
        self.note_step_failure = (
            "UPDATE tasks SET step_id = :step_id, step_attempt = :attempt, updated_at = :now "
            "WHERE id = :id AND counter = :counter AND state = 'claimed'"
        )
        # PostgreSQL flushes the log at a commit only if the transaction has an id and
        # wrote to the log before its commit record: a transactional logical message
        # does both, writes no table, and any role may send it.
        self.flush_log = (
            "SELECT pg_logical_emit_message(true, 'agent-tools', 'flush')" if pg else ""
        )
        self.heartbeat = (
            "UPDATE tasks SET lease_expires_at = :lease_end "
            f"WHERE owner = :owner AND state = 'claimed' AND id {in_ids} RETURNING id, counter"
        )
        self.set_progress = (
            "UPDATE tasks SET progress = :progress "
            "WHERE id = :id AND counter = :counter AND state = 'claimed'"
        )
        self.claimed_on_host = (
            "SELECT id, counter, owner_pid FROM tasks "
            "WHERE state = 'claimed' AND owner_host = :host AND owner <> :owner"
        )
        self.expire_lease = (
            "UPDATE tasks SET lease_expires_at = 0 "
            "WHERE id = :id AND counter = :counter AND state = 'claimed'"
        )
        self.next_due = (
            "SELECT (SELECT min(ready_at) FROM tasks WHERE state = 'ready' "
            f"AND kind {in_kinds}), (SELECT min(lease_expires_at) FROM tasks "
            f"WHERE state = 'claimed' AND kind {in_kinds}), (SELECT min(next_fire_at) "
            f"FROM schedules WHERE state = 'active' AND fn {in_kinds})"
        )
        self.task = f"SELECT {t} FROM tasks WHERE id = :id"
        self.ready_count = "SELECT count(*) FROM tasks WHERE state = 'ready' AND ready_at <= :now"
        # A job, its task, and what the task waits on: one read for a job's status.
        self.views = (
            f"SELECT {_prefixed(p, 'p')}, {_prefixed(t, 't')}, {_prefixed(p, 'w')} "
            "FROM promises p LEFT JOIN tasks t ON t.id = p.id "
            f"LEFT JOIN promises w ON w.id = t.waiting_on WHERE p.id {in_ids}"
        )

        # -- PostgreSQL: a job's common writes in one round trip each ------------------
        # (On SQLite every statement is a function call in this process; there the
        # runtime runs the plain statements above one after the other.)
        pc = ", ".join(f"s.{c.strip()}" for c in p.split(","))
        self.start_job = (
            "WITH p AS (INSERT INTO promises (id, state, timer, param_headers, param_data, "
            "value_headers, value_data, timeout_at, tags, ikey_create, ikey_settle, created_at, "
            "settled_at) VALUES (:id, 'pending', :timer, :param_headers, :param_data, NULL, NULL, "
            ":timeout_at, :tags, :ikey_create, NULL, :now, NULL) "
            "ON CONFLICT (id) DO NOTHING RETURNING seq), "
            "g AS (INSERT INTO promise_tags (seq, key, value, pending) "
            "SELECT p.seq, tag.key, tag.value, 1 FROM p, "
            "unnest(CAST(:tag_keys AS TEXT[]), CAST(:tag_values AS TEXT[])) AS tag(key, value)), "
            "k AS (INSERT INTO tasks (id, kind, state, ready_at, waiting_on, owner, owner_host, "
            "owner_pid, lease_expires_at, counter, attempts, step_id, step_attempt, progress, "
            "updated_at) SELECT CAST(:id AS VARCHAR), CAST(:kind AS VARCHAR), "
            "CAST(:task_state AS VARCHAR), CAST(:ready_at AS BIGINT), NULL, "
            "CAST(:owner AS VARCHAR), CAST(:owner_host AS VARCHAR), CAST(:owner_pid AS INTEGER), "
            "CAST(:lease_expires_at AS BIGINT), CAST(:counter AS BIGINT), "
            "CAST(:attempts AS INTEGER), NULL, 0, NULL, CAST(:now AS BIGINT) FROM p) "
            "SELECT seq FROM p"
            if pg
            else ""
        )
        self.record_step = (
            "WITH f AS (UPDATE tasks SET updated_at = :now WHERE id = :job AND counter = :counter "
            "AND state = 'claimed' RETURNING 1), "
            "i AS (INSERT INTO promises (id, state, timer, param_headers, param_data, "
            "value_headers, value_data, timeout_at, tags, ikey_create, ikey_settle, created_at, "
            "settled_at) SELECT CAST(:id AS VARCHAR), CAST(:state AS VARCHAR), false, "
            "CAST(:param_headers AS VARCHAR), CAST(:param_data AS VARCHAR), "
            "CAST(:value_headers AS VARCHAR), CAST(:value_data AS VARCHAR), "
            "CAST(:timeout_at AS BIGINT), NULL, CAST(:id AS VARCHAR), CAST(:id AS VARCHAR), "
            "CAST(:now AS BIGINT), CAST(:now AS BIGINT) WHERE EXISTS (SELECT 1 FROM f) "
            "ON CONFLICT (id) DO NOTHING RETURNING seq) "
            "SELECT (SELECT count(*) FROM f), (SELECT seq FROM i)"
            if pg
            else ""
        )
        # A job going to sleep: create its timer (and the timer's tags) and give the task
        # back until the timer is due, waiting on it. Fenced: a stale owner writes
        # nothing. The task is written only if the timer was made here: a timer that
        # exists already takes the general path, which locks it before waiting on it. A
        # new timer needs no lock: no one else sees it before this commits.
        self.sleep_job = (
            "WITH f AS (SELECT 1 FROM tasks WHERE id = :id AND counter = :counter "
            "AND state = 'claimed' FOR NO KEY UPDATE), "
            "p AS (INSERT INTO promises (id, state, timer, param_headers, param_data, "
            "value_headers, value_data, timeout_at, tags, ikey_create, ikey_settle, created_at, "
            "settled_at) SELECT CAST(:timer_id AS VARCHAR), 'pending', CAST(:timer AS BOOLEAN), "
            "CAST(:param_headers AS VARCHAR), CAST(:param_data AS VARCHAR), NULL, NULL, "
            "CAST(:ready_at AS BIGINT), CAST(:tags AS VARCHAR), CAST(:ikey_create AS VARCHAR), "
            "NULL, CAST(:now AS BIGINT), NULL WHERE EXISTS (SELECT 1 FROM f) "
            "ON CONFLICT (id) DO NOTHING RETURNING seq), "
            "g AS (INSERT INTO promise_tags (seq, key, value, pending) "
            "SELECT p.seq, tag.key, tag.value, 1 FROM p, "
            "unnest(CAST(:tag_keys AS TEXT[]), CAST(:tag_values AS TEXT[])) AS tag(key, value)), "
            "u AS (UPDATE tasks SET state = 'ready', ready_at = :ready_at, "
            "waiting_on = :timer_id, owner = NULL, owner_host = NULL, owner_pid = NULL, "
            "lease_expires_at = NULL, updated_at = :now WHERE id = :id AND counter = :counter "
            "AND state = 'claimed' AND EXISTS (SELECT 1 FROM p) RETURNING 1) "
            "SELECT (SELECT count(*) FROM f), (SELECT seq FROM p), (SELECT count(*) FROM u)"
            if pg
            else ""
        )
        # Fence, write the job's last finished steps (none, or several: one array per
        # column) and settle the job: a whole one-step job's end in one round trip.
        # The fence only locks the task (no row version of its own): the settle's
        # trigger writes the task once, as done.
        self.finish_job = (
            "WITH f AS (SELECT 1 FROM tasks WHERE id = :id AND counter = :counter "
            "AND state = 'claimed' FOR NO KEY UPDATE), "
            "i AS (INSERT INTO promises (id, state, timer, param_headers, param_data, "
            "value_headers, value_data, timeout_at, tags, ikey_create, ikey_settle, created_at, "
            "settled_at) SELECT r.id, r.state, false, r.param_headers, r.param_data, "
            "r.value_headers, r.value_data, CAST(:steps_timeout_at AS BIGINT), NULL, r.id, r.id, "
            "CAST(:now AS BIGINT), CAST(:now AS BIGINT) FROM unnest(CAST(:step_ids AS VARCHAR[]), "
            "CAST(:step_states AS VARCHAR[]), CAST(:step_param_headers AS VARCHAR[]), "
            "CAST(:step_param_data AS VARCHAR[]), CAST(:step_value_headers AS VARCHAR[]), "
            "CAST(:step_value_data AS VARCHAR[])) AS r(id, state, param_headers, param_data, "
            "value_headers, value_data) WHERE EXISTS (SELECT 1 FROM f) "
            "ON CONFLICT (id) DO NOTHING RETURNING id), "
            f"s AS (UPDATE promises SET state = :state, value_headers = :headers, "
            f"value_data = :data, ikey_settle = :ikey, settled_at = {settle_time} "
            "WHERE id = :id AND state = 'pending' AND timeout_at > :now "
            f"AND EXISTS (SELECT 1 FROM f) RETURNING {p}) "
            "SELECT (SELECT count(*) FROM f), (SELECT array_agg(DISTINCT kind) FROM tasks "
            "WHERE waiting_on = :id), (SELECT array_agg(id) FROM i), "
            f"{pc} FROM (SELECT 1) AS one LEFT JOIN s ON true"
            if pg
            else ""
        )

        # -- workers ----------------------------------------------------------------
        w = WORKER_COLUMNS
        self.insert_worker = (
            f"INSERT INTO workers ({w}) VALUES (:id, :host, :pid, :kinds, :listener, :now, "
            ":now, NULL)"
        )
        self.worker_seen = "UPDATE workers SET seen_at = :now WHERE id = :id"
        self.worker_stopped = "UPDATE workers SET stopped_at = :now, seen_at = :now WHERE id = :id"
        self.workers = f"SELECT {w} FROM workers ORDER BY started_at DESC"
        # Stopped, or silent (killed: no heartbeat) since the cutoff.
        self.prune_workers = "DELETE FROM workers WHERE COALESCE(stopped_at, seen_at) < :cutoff"
        self.live_listeners = (
            "SELECT application_name FROM pg_stat_activity WHERE application_name = ANY(:names)"
            if pg
            else ""
        )

        # -- schedules --------------------------------------------------------------
        s = SCHEDULE_COLUMNS
        self.insert_schedule = (
            f"INSERT INTO schedules ({s}) VALUES (:id, :cron, :timezone, :fn, :args, 'active', "
            ":next_fire_at, :now, NULL, NULL, NULL, NULL, 0) ON CONFLICT (id) DO NOTHING"
        )
        self.schedule = f"SELECT {s} FROM schedules WHERE id = :id"
        self.schedule_for_update = self.schedule + for_update
        self.schedules_page = (
            f"SELECT {s} FROM schedules WHERE id > :after ORDER BY id LIMIT :limit"
        )
        self.schedules_in_state = (
            f"SELECT {s} FROM schedules WHERE state = :state AND id > :after "
            "ORDER BY id LIMIT :limit"
        )
        self.set_schedule_state = (
            "UPDATE schedules SET state = :state, next_fire_at = :next_fire_at "
            "WHERE id = :id AND state <> 'cancelled'"
        )
        self.due_schedules = (
            "SELECT id FROM schedules WHERE state = 'active' AND next_fire_at <= :now "
            f"AND fn {in_kinds} ORDER BY next_fire_at"
        )
        self.schedule_fired = (
            "UPDATE schedules SET next_fire_at = :following, last_fired_at = :tick, "
            "last_job_id = :job_id, last_error = NULL, last_error_at = NULL, failures = 0 "
            "WHERE id = :id AND next_fire_at = :next_fire_at AND state = 'active'"
        )
        self.schedule_failed = (
            "UPDATE schedules SET next_fire_at = :following, last_error = :error, "
            "last_error_at = :now, failures = failures + 1 "
            "WHERE id = :id AND next_fire_at = :next_fire_at"
        )

        # Every attribute above is a statement: render its parameters for the driver.
        if pg:
            for name, value in list(vars(self).items()):
                if isinstance(value, str) and name != "dialect":
                    setattr(self, name, _PARAM.sub(r"%(\1)s", value))

    def ids(self, values: Sequence[str]) -> Any:
        """A list parameter for ``:ids`` / ``:kinds``."""
        return list(values) if self.dialect == "postgresql" else json.dumps(list(values))

    def render(self, sql: str) -> str:
        """A statement built at run time (search), in this driver's parameter style."""
        return _PARAM.sub(r"%(\1)s", sql) if self.dialect == "postgresql" else sql


_CACHE: dict[Dialect, Statements] = {}


def statements(dialect: Dialect) -> Statements:
    found = _CACHE.get(dialect)
    if found is None:
        found = _CACHE[dialect] = Statements(dialect)
    return found
