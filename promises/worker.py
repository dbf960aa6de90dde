"""The worker: claims tasks, runs their jobs, keeps their leases, and keeps time.

Embed it in an asyncio program (``await Worker(runtime).run()``, as the MCP server
does) or run it alone::

    python -m promises.worker --db sqlite:///work.db --jobs my_app.jobs

It wakes at once when a job is started or a waited-on promise settles in this
process, at the next ``ready_at`` it knows of, and otherwise every ``poll_interval``
(what another process did is seen within that bound). Every ``upkeep_interval`` it
sweeps expired promises, reclaims tasks of dead processes on this host, fires due
cron schedules, and (hourly) collects promises past retention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta

from promises.errors import PromiseError
from promises.runtime import Runtime
from promises.schedules import Schedules
from promises.store import open_store
from promises.tasks import TASKS_KEY, Claim, Owner

log = logging.getLogger("promises.worker")


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        concurrency: int = 16,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: float = 0.5,
        upkeep_interval: float = 1.0,
        owner: Owner | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.runtime = runtime
        self.store = runtime.store
        self.schedules = Schedules(runtime)
        self.concurrency = concurrency
        self.lease_ms = int(lease.total_seconds() * 1000)
        self.poll_interval = poll_interval
        self.upkeep_interval = upkeep_interval
        self.owner = owner or Owner.here()
        self.running: dict[str, tuple[Claim, asyncio.Task[None]]] = {}
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._next_upkeep = 0.0
        self._next_collect = 0.0

    def wake(self) -> None:
        """Look for work now (thread-safe through the store's notifier)."""
        self.store.notifier.notify([TASKS_KEY])

    def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with self.store.notifier.listen(TASKS_KEY) as wake:
            self._wake = wake
            heartbeats = asyncio.create_task(self._heartbeats())
            try:
                while not self._stopping:
                    wake.clear()
                    if loop.time() >= self._next_upkeep:
                        await self._upkeep()
                        self._next_upkeep = loop.time() + self.upkeep_interval
                    try:
                        if await self._claim_some():
                            continue  # maybe more is ready; the loop waits when slots are full
                        await self._idle(wake, loop)
                    except PromiseError:
                        # The store is unavailable (locked too long, connection lost): keep
                        # the worker alive and try again after a pause.
                        log.exception("the store failed; retrying in %.1f s", self.poll_interval)
                        await asyncio.sleep(self.poll_interval)
            finally:
                heartbeats.cancel()
                await self._release_all()
                self._wake = None

    async def _claim_some(self) -> bool:
        """Claim up to the free slots; true when every free slot was filled."""
        free = self.concurrency - len(self.running)
        if free <= 0:
            return False
        claims = await asyncio.to_thread(self.runtime.tasks.claim, self.owner, free, self.lease_ms)
        for claim in claims:
            self._spawn(claim)
        return bool(claims) and len(claims) == free

    async def _idle(self, wake: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        timeout = min(self.poll_interval, max(self._next_upkeep - loop.time(), 0))
        if len(self.running) < self.concurrency:
            next_ready = await asyncio.to_thread(self.runtime.tasks.next_ready_at)
            if next_ready is not None:
                timeout = min(timeout, max(next_ready - self.store.clock(), 0) / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)

    def _spawn(self, claim: Claim) -> None:
        task = asyncio.create_task(self._execute(claim), name=f"job {claim.id}")
        self.running[claim.id] = (claim, task)

        def done(_: asyncio.Task[None]) -> None:
            if self.running.get(claim.id, (None,))[0] == claim:
                del self.running[claim.id]
            if self._wake is not None:
                self._wake.set()  # a slot is free

        task.add_done_callback(done)

    async def _execute(self, claim: Claim) -> None:
        try:
            await self.runtime.execute(claim)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The job's own errors are stored by the runtime; this is the runtime failing
            # (e.g. the database went away). The lease expires and the job runs again.
            log.exception("running job %s failed; it will be retried after its lease", claim.id)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            claims = [claim for claim, _ in self.running.values()]
            try:
                lost = await asyncio.to_thread(self.runtime.tasks.heartbeat, claims, self.lease_ms)
            except Exception:
                log.exception("heartbeat failed; retrying")
                continue
            for claim in lost:
                entry = self.running.get(claim.id)
                if entry is not None and entry[0] == claim:
                    log.info(
                        "lost the lease of %s (settled elsewhere or reclaimed); stopping it",
                        claim.id,
                    )
                    entry[1].cancel()

    async def _upkeep(self) -> None:
        try:
            await asyncio.to_thread(self.store.sweep)
            await asyncio.to_thread(self.runtime.tasks.reclaim_dead_owners, self.owner)
            await asyncio.to_thread(self.schedules.fire_due)
            loop = asyncio.get_running_loop()
            if loop.time() >= self._next_collect:
                await asyncio.to_thread(self.store.collect)
                self._next_collect = loop.time() + 3600
        except Exception:
            log.exception("upkeep failed; retrying at the next interval")

    async def _release_all(self) -> None:
        """On shutdown: stop running jobs and hand their tasks back at once."""
        entries = list(self.running.values())
        for _, task in entries:
            task.cancel()
        for claim, task in entries:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.runtime.tasks.suspend, claim, self.store.clock(), None)


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
        help="module defining @durable functions (repeatable)",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--lease", type=float, default=30.0, help="lease length in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    for module in args.jobs:
        importlib.import_module(module)
    store = open_store(args.db)
    worker = Worker(
        Runtime(store), concurrency=args.concurrency, poll_interval=args.poll_interval,
        lease=timedelta(seconds=args.lease),
    )  # fmt: skip

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
