"""A refund that waits for a person, approved from the page — one command, offline.

    python examples/approvals/demo.py                   # you decide in your browser
    python examples/approvals/demo.py --approve-as Ana  # decide for you, as a browser would

It starts the server (MCP over HTTP, with its pages), asks for a 250 EUR refund through
MCP, prints the approval link, waits for the decision, and shows what the job did.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from mcp import Client

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from examples.processes import Server  # noqa: E402  (found through the path just set)


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error:
        raise SystemExit(f"{tool} failed: {result.content}")
    return result.structured_content or {}


def approve_like_a_browser(link: str, name: str) -> None:
    """What a person's browser sends when they press Approve on the page."""
    page = httpx.get(link).text
    action = re.search(r'action="(\?form_token=[0-9a-f]+)"', page)
    if action is None:
        raise SystemExit("the approval page has no form; was it decided already?")
    origin = "/".join(link.split("/")[:3])
    form = {"decision": "approve", "by": name, "comment": "fine by me"}
    answer = httpx.post(link.split("?")[0] + action[1], headers={"Origin": origin}, data=form)
    answer.raise_for_status()


async def story(url: str, approve_as: str | None) -> None:
    async with Client(url) as client:
        refund = {"order_id": "B-2", "amount_eur": 250.0, "reason": "never arrived"}
        job = await call(client, "start_refunds_refund", refund)
        print(f"asked for a refund of 250.00 EUR for order B-2 (job {job['job_id']})", flush=True)
        while True:
            status = (await call(client, "probe_status", {"job_ids": [job["job_id"]]}))["jobs"][0]
            if (status.get("waiting_for") or {}).get("link"):
                break
            await asyncio.sleep(0.1)
        link = status["waiting_for"]["link"]
        print(f"it waits for a person. Decide here: {link}", flush=True)
        if approve_as:
            await asyncio.to_thread(approve_like_a_browser, link, approve_as)
            print(f"approved on the page as {approve_as}", flush=True)
        while True:
            waited = await call(
                client, "await_result", {"job_ids": [job["job_id"]], "timeout_s": 30}
            )
            if waited["done"]:
                break
        result = waited["done"][0]["result"]
        if result["status"] == "refunded":
            print(
                f"refunded: {refund['amount_eur']:.2f} EUR for order {result['order_id']}, "
                f"approved by a {result['decided_by']} (payment key {result['refund_id']})"
            )
        else:
            print(
                f"{result['status']}: nothing was paid"
                + (f" ({result['comment']})" if result.get("comment") else "")
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--port", type=int, default=0, help="the server's port (default: a free one)"
    )
    parser.add_argument(
        "--approve-as",
        metavar="NAME",
        default=None,
        help="approve on the page yourself, as NAME, instead of waiting for you",
    )
    args = parser.parse_args()  # fmt: skip
    directory = Path(tempfile.mkdtemp())
    env = {**os.environ, "REFUNDS_LEDGER": str(directory / "ledger.jsonl")}
    server = Server(directory / "refunds.db", args.port, "examples.approvals.refunds", env)
    try:
        asyncio.run(story(server.url, args.approve_as))
    except KeyboardInterrupt:
        print("stopped; the refund still waits in", directory / "refunds.db")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
