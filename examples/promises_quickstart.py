"""The durable promise store on its own: create, settle, rejoin from another process."""

import sys
import tempfile

from promises import Value, open_store

db = sys.argv[1] if len(sys.argv) > 1 else f"{tempfile.mkdtemp()}/quickstart.db"

# --8<-- [start:quickstart]
store = open_store(f"sqlite:///{db}")
hour = 3_600_000  # timeouts are absolute, in ms since the epoch

# Create with an idempotency key: a retried create returns the same promise.
first = store.create("report-7", timeout_at=store.clock() + hour, ikey="start-7")
again = store.create("report-7", timeout_at=store.clock() + hour, ikey="start-7")
assert first.fresh and again.deduplicated

# Any process that opens the same file can settle it, exactly once.
store.resolve("report-7", value=Value('{"rows": 42}'), ikey="done-7")
print(store.get("report-7").state, store.get("report-7").value.data)
# --8<-- [end:quickstart]
