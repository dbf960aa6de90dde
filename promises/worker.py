"""The worker: claims tasks of the kinds it has, runs their jobs, keeps their leases.

Embed it in an asyncio program (``await Worker(runtime).run()``, as the MCP server
does) or run it alone::

    python -m promises.worker --db sqlite:///work.db --jobs my_app.jobs

It claims only the kinds it has loaded; jobs of other kinds stay pending for a worker
that has them. It wakes when a task of its kinds may have become claimable — at once
for a job started or a promise settled in this process, through the store's change
feed for other processes, at the next ready time or cron tick it knows of — and
otherwise every ``poll_interval`` as a fallback. It reads before it writes: an idle
worker takes no write lock.

Upkeep runs beside it, each part on its own and isolated from the others' failures:
reclaiming tasks of dead processes on this host, firing due cron schedules, storing
timeouts nobody read, and (hourly) retention. A store outage never stops a worker:
it logs (throttled) and tries again.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import contextvars
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import timedelta
from typing import Any

from promises.changes import wait_ready
from promises.errors import PromiseError
from promises.logs import Throttled
from promises.loopcalls import call_soon
from promises.records import Promise
from promises.runtime import Runtime
from promises.schedules import Schedules
from promises.store import open_store_waiting
from promises.tasks import Claim, Owner
from promises.upkeep import sweep_if_needed

log = logging.getLogger("promises.worker")


def _in_thread(
    loop: asyncio.AbstractEventLoop, pool: concurrent.futures.Executor, fn: Callable[[], Any]
) -> asyncio.Future[Any]:
    """Run sync step code on ``pool``, in the context it was called in
    (``current_step()``); its outcome comes back with one hand-off to the loop (leaner
    than ``run_in_executor``, which chains two futures). A step cancelled before it
    started does not start."""
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def answer(value: Any, error: BaseException | None) -> None:
        if future.done():
            return  # cancelled meanwhile
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def work() -> None:
        if future.cancelled():
            return
        error: BaseException | None
        try:
            value, error = context.run(fn), None
        except StopIteration as exc:  # a future cannot hold one: it would never answer
            value, error = None, RuntimeError(f"the step raised StopIteration: {exc!r}")
        except BaseException as exc:
            value, error = None, exc
        call_soon(loop, answer, value, error)  # a closed loop: nobody waits

    pool.submit(work)
    return future


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        kinds: Collection[str] | None = None,
        concurrency: int = 16,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: float = 5.0,
        upkeep_interval: float = 2.0,
        sweep_interval: float = 30.0,
        retention_interval: float = 3600.0,
        owner: Owner | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.runtime = runtime
        self.store = runtime.store
        self.schedules = Schedules(runtime)
        self.kinds = frozenset(runtime.registry if kinds is None else kinds)
        self.concurrency = concurrency
        self.lease_ms = int(lease.total_seconds() * 1000)
        self.poll_interval = poll_interval
        self.upkeep_interval = upkeep_interval
        self.sweep_interval = sweep_interval
        self.retention_interval = retention_interval
        self.owner = owner or Owner.here()
        self.running: dict[str, tuple[Claim, asyncio.Task[None]]] = {}
        self._lock = threading.Lock()
        self._reserved = 0
        #: The last look for work found no free slot.
        self._full = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._steps = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="promises-step"
        )
        self._log = Throttled(log)
        #: How many times the worker has looked for work (tests wait on it to know that
        #: it looked after something they did).
        self.passes = 0

    # -- control ---------------------------------------------------------------------

    def wake(self) -> None:
        """Look for work now (thread-safe)."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None:
            call_soon(loop, event.set)

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    # -- jobs handed over by the runtime (``LocalWorker``) -----------------------------

    def reserve(self, kind: str) -> bool:
        """Hold a slot for a job about to be started in this process (thread-safe)."""
        with self._lock:
            if (
                self._stopping
                or self._loop is None
                or kind not in self.kinds
                or len(self.running) + self._reserved >= self.concurrency
            ):
                return False
            self._reserved += 1
            return True

    def unreserve(self) -> None:
        with self._lock:
            self._reserved -= 1
        self.wake()

    def adopt(self, claim: Claim, job: Promise) -> None:
        """Run a job claimed for this worker when it was started (thread-safe)."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None:
            return  # stopped meanwhile: the lease runs out and another worker takes it
        if running is loop:
            self._adopt(claim, job)
        else:
            call_soon(loop, self._adopt, claim, job)

    def _adopt(self, claim: Claim, job: Promise) -> None:
        with self._lock:
            self._reserved -= 1
        self._spawn(claim, job, None)

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        feed = self.store.waiters.feed()
        await loop.run_in_executor(None, wait_ready, feed)
        await self._retrying("registering the worker", lambda: self.runtime.presence.register(
            self.owner, self.kinds, feed.listener))  # fmt: skip
        with self.store.waiters.listen_tasks(self.kinds) as listener:
            wake = listener.event
            self._loop, self._wake = loop, wake
            if self.runtime.local_worker is None:
                self.runtime.local_worker = self
            background = [
                asyncio.create_task(self._heartbeats(), name="promises heartbeats"),
                asyncio.create_task(self._upkeep(), name="promises upkeep"),
            ]
            try:
                while not self._stopping:
                    listener.due = None  # while it looks, any change makes it look again
                    wake.clear()
                    try:
                        pause = await self._work()
                        self.passes += 1
                        self._log.recovered("loop", "the store answers again")
                    except PromiseError as exc:
                        self._log.warning("loop", "the store failed (%s); retrying", exc, exc=exc)
                        pause = min(self.poll_interval, 1.0)
                    if self._stopping:
                        break
                    # It looks again after the pause anyway: a task of this process made
                    # ready no sooner (a job gone to sleep) is no reason to wake it.
                    listener.due = self.store.clock() + int(pause * 1000)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), pause)
            finally:
                if self.runtime.local_worker is self:
                    self.runtime.local_worker = None
                with self._lock:
                    self._loop = None
                for task in background:
                    task.cancel()
                await self._release_all()
                with contextlib.suppress(PromiseError):
                    await self.runtime.presence.stopped(self.owner)
                self._wake = None
                self._steps.shutdown(wait=False)

    async def _retrying(self, what: str, action: Callable[[], Awaitable[Any]]) -> None:
        pause = 0.1
        while not self._stopping:
            try:
                await action()
                return
            except PromiseError as exc:
                self._log.warning(what, "%s failed (%s); retrying", what, exc, exc=exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _work(self) -> float:
        """Claim what is due and fire due cron ticks; returns how long to idle."""
        while True:
            now = self.store.clock()
            ready, lease, tick = await self.runtime.tasks.next_due(self.kinds)
            if tick is not None and tick <= now:
                await self.schedules.afire_due(self.kinds)
                continue  # the ticks moved on; the jobs they started are tasks now
            free = self.concurrency - len(self.running) - self._reserved
            if free > 0 and any(t is not None and t <= now for t in (ready, lease)):
                claims = await self.runtime.tasks.claim(self.owner, self.kinds, free, self.lease_ms)
                for claim, job, ready_at in claims:
                    self._spawn(claim, job, max(now - ready_at, 0))
                if claims:
                    continue  # maybe more is due; with every slot full we wait for one
            # Full: what is due waits for a slot, and a finishing job wakes the loop.
            self._full = free <= 0
            coming = [tick, *((ready, lease) if free > 0 else ())]
            waits = [(t - now) / 1000 for t in coming if t is not None and t > now]
            return float(max(min([self.poll_interval, *waits]), 0.001))

    def _spawn(self, claim: Claim, job: Promise, woke_after_ms: int | None) -> None:
        task = asyncio.create_task(self._execute(claim, job, woke_after_ms), name=f"job {claim.id}")
        self.running[claim.id] = (claim, task)

        def done(_: asyncio.Task[None]) -> None:
            if self.running.get(claim.id, (None,))[0] == claim:
                del self.running[claim.id]
            if self._wake is not None and self._full:
                self._wake.set()  # a slot is free for what waits

        task.add_done_callback(done)

    async def _execute(self, claim: Claim, job: Promise, woke_after_ms: int | None) -> None:
        loop = asyncio.get_running_loop()

        def to_thread(fn: Callable[[], Any]) -> Awaitable[Any]:
            return _in_thread(loop, self._steps, fn)

        try:
            await self.runtime.execute(claim, job, to_thread=to_thread, woke_after_ms=woke_after_ms)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # The job's own errors are stored by the runtime; this is the runtime failing
            # (e.g. the database went away). The lease expires and the job runs again.
            self._log.warning(
                f"job:{type(exc).__name__}",
                "running job %s failed (%s); it runs again after its lease", claim.id, exc, exc=exc,
            )  # fmt: skip

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            if not self.running:
                continue  # an idle worker writes nothing
            # Judge only the claims held before the heartbeat was sent: one adopted or
            # claimed while it was in flight may be missing from its answer (another
            # writer committed it after the heartbeat's snapshot) and is not lost.
            judged = list(self.running.values())
            try:
                held = await self.runtime.tasks.heartbeat(
                    self.owner, self.lease_ms, [claim.id for claim, _ in judged]
                )
                self._log.recovered("heartbeat", "heartbeats succeed again")
            except PromiseError as exc:
                self._log.warning("heartbeat", "heartbeat failed (%s); retrying", exc, exc=exc)
                continue
            for claim, task in judged:
                if (claim.id, claim.counter) not in held and not task.done():
                    log.info("lost the lease of %s (settled elsewhere or reclaimed); stopping it",
                             claim.id)  # fmt: skip
                    task.cancel()

    async def _upkeep(self) -> None:
        """Each chore on its own clock; one failing never stops the others."""
        loop = asyncio.get_running_loop()
        chores: list[tuple[str, float, Callable[[], Awaitable[Any]]]] = [
            ("reclaim", self.upkeep_interval,
             lambda: self.runtime.tasks.reclaim_dead_owners(self.owner)),
            ("sweep", self.sweep_interval, lambda: loop.run_in_executor(
                None, sweep_if_needed, self.store, self.store.clock())),
            ("retention", self.retention_interval,
             lambda: loop.run_in_executor(None, self._retention)),
        ]  # fmt: skip
        due = dict.fromkeys((name for name, _, _ in chores), loop.time())
        while True:
            for name, every, chore in chores:
                if loop.time() < due[name]:
                    continue
                due[name] = loop.time() + every
                try:
                    await chore()
                    self._log.recovered(name, "upkeep (%s) succeeds again", name)
                except Exception as exc:
                    self._log.warning(name, "upkeep (%s) failed: %s", name, exc, exc=exc)
            await asyncio.sleep(max(min(due.values()) - loop.time(), 0.01))

    def _retention(self) -> None:
        self.store.collect()
        self.store.db.write(
            lambda tx: self.runtime.presence.prune_tx(tx, self.store.retention), durable=False
        )

    async def _release_all(self) -> None:
        """On shutdown: stop running jobs and hand their tasks back at once."""
        entries = list(self.running.values())
        for _, task in entries:
            task.cancel()
        for claim, task in entries:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(Exception):
                await self.runtime.tasks.release(claim)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m promises.worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", required=True, help="sqlite:///file.db or postgresql+psycopg://…")
    parser.add_argument(
        "--jobs",
        action="append",
        default=[],
        help="module defining @durable functions (repeatable); the worker runs only these kinds",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="jobs run at once")
    parser.add_argument(
        "--poll-interval", type=float, default=5.0, help="fallback poll, seconds (default 5)"
    )
    parser.add_argument("--lease", type=float, default=30.0, help="lease length in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    from promises.functions import REGISTRY

    kinds: set[str] = set()
    for module in args.jobs:
        loaded = importlib.import_module(module)
        kinds |= {name for name, f in REGISTRY.items() if f.fn.__module__ == loaded.__name__}

    try:
        store = open_store_waiting(args.db)
    except PromiseError as exc:  # a bad URL, wrong credentials: waiting would not help
        log.error("cannot open the store: %s", exc)
        return 2
    worker = Worker(
        Runtime(store), kinds=kinds, concurrency=args.concurrency,
        poll_interval=args.poll_interval, lease=timedelta(seconds=args.lease),
    )  # fmt: skip
    shown = store.backend.url.render_as_string(hide_password=True)
    log.info("worker on %s running kinds: %s", shown, ", ".join(sorted(kinds)) or "none")

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    asyncio.run(serve())
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
