"""A durable function with a checkpointed step, a durable sleep and an outside decision,
run by an in-process worker. ``python examples/durable_quickstart.py [db-file]``"""

import asyncio
import sys
import tempfile
from datetime import timedelta

from promises import Context, Exponential, Runtime, Value, Worker, durable, open_store

db = sys.argv[1] if len(sys.argv) > 1 else f"{tempfile.mkdtemp()}/quickstart.db"


def fetch_month(city: str, month: str) -> dict:
    return {"city": city, "month": month, "rain_mm": len(city) * len(month)}  # a real API call


# --8<-- [start:durable]
@durable(name="gather", retry=Exponential(max_attempts=5))  # no deadline unless you give one
async def gather(ctx: Context, city: str, months: list[str]) -> dict:
    rows = [await ctx.run(fetch_month, city, m) for m in months]  # each step checkpointed
    await ctx.sleep(timedelta(seconds=1))  # a durable timer: survives restarts
    approval = ctx.promise(timeout=timedelta(days=2))  # someone outside settles it
    ctx.progress(f"waiting for approval {approval.id}", 0.9)
    ok = await approval
    return {"rows": rows, "approved": ok}


async def main() -> None:
    store = open_store(f"sqlite:///{db}")
    runtime = Runtime(store)
    worker = Worker(runtime)  # or in another process: python -m promises.worker
    running = asyncio.create_task(worker.run())
    job = await runtime.astart(gather, "Lisbon", ["2026-01", "2026-02"], id="gather-lisbon")
    approval = "gather-lisbon.3"  # the job's step 3: the promise it waits for
    while (await runtime.aviews([job.promise.id]))[job.promise.id].waited_on != approval:
        await asyncio.sleep(0.1)
    await store.asettle(approval, "resolve", value=Value("true"))  # from a page, a CLI...
    done = await store.wait(job.promise.id, timeout=30)
    print(done.state, Runtime.result(done)["approved"])
    worker.stop()
    await running


# --8<-- [end:durable]


if __name__ == "__main__":
    asyncio.run(main())
