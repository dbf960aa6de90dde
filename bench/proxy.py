"""What ``agent-tools proxy`` adds to a quick call; prints JSON.

Every proxied call is a durable job (created, claimed, its one step checkpointed, settled
in SQLite) around the upstream call, answered inline. These figures put that beside the
same call made straight to the upstream (tests/proxy_upstream.py, its ``echo`` tool),
with the SDK's Python client (``mcp.Client``):

(a) N sequential calls, p50 / p99 latency: direct over stdio, and through
    ``agent-tools proxy -- python tests/proxy_upstream.py`` over stdio;
(b) the same over streamable HTTP: the upstream's own ``--http``, and
    ``agent-tools proxy --http`` (its upstream over stdio);
(c) 50 calls in flight on one session (a client calling again as soon as one is
    answered), through the proxy and direct, on both transports: calls/s, p50 / p99,
    and the proxy process's CPU time per call (one event loop: ~1 CPU is its ceiling).

The proxy's database is SQLite in a temporary directory (WAL, synchronous=FULL). The
client runs in this process, on the same CPUs as the proxy and the upstream: its cost
is part of every figure.

    python bench/proxy.py [--calls 300] [--in-flight 50] [--concurrent-calls 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path, where bench/mcp.py would
# shadow the `mcp` package: look in the project root instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from bench.common import free_port, percentiles, served  # noqa: E402

UPSTREAM = [sys.executable, str(ROOT / "tests" / "proxy_upstream.py")]
AGENT_TOOLS = str(Path(sys.executable).parent / "agent-tools")
WARM_UP = 20


def proxy_argv(db: Path, *serving: str) -> list[str]:
    # Inline wait at its default (45 s): every echo answers inline.
    return [AGENT_TOOLS, "proxy", "--db", str(db), *serving, "--", *UPSTREAM]


@contextlib.asynccontextmanager
async def stdio(argv: list[str]) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=argv[0], args=argv[1:], cwd=str(ROOT))
    with open(os.devnull, "w") as quiet:  # the proxy logs each start on stderr
        async with Client(stdio_client(params, errlog=quiet)) as client:
            yield client


@contextlib.contextmanager
def listening(argv: list[str], port: int) -> Iterator[str]:
    """A server process on ``port``; yields its MCP URL, SIGTERMs it after."""
    with served(argv, port):
        yield f"http://127.0.0.1:{port}/mcp"


@contextlib.asynccontextmanager
async def http(url: str) -> AsyncIterator[Client]:
    async with (
        create_mcp_http_client() as http_client,
        Client(streamable_http_client(url, http_client=http_client)) as client,
    ):
        yield client


async def echo(client: Client, i: int) -> float:
    began = time.perf_counter()
    result = await client.call_tool("echo", {"text": f"call {i}"})
    elapsed = time.perf_counter() - began
    text = getattr(result.content[0], "text", None) if result.content else None
    if result.is_error or text != f"echo: call {i}":
        raise RuntimeError(f"echo {i} answered {result.content!r}")
    return elapsed


async def sequential(client: Client, calls: int) -> dict[str, Any]:
    for i in range(WARM_UP):
        await echo(client, -i)
    latencies = [await echo(client, i) for i in range(calls)]
    return {"calls": calls, **percentiles(latencies, 2)}


def cpu_s(needle: str) -> float | None:
    """CPU seconds used so far by the processes whose command line holds ``needle``
    (Linux /proc; None elsewhere)."""
    total, found = 0.0, False
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if needle.encode() in command:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            found = True
    return total if found else None


async def in_flight(
    client: Client, width: int, calls: int, server: str | None = None
) -> dict[str, Any]:
    """``width`` calls in flight on one session until ``calls`` are answered; with
    ``server`` (a string in the server's command line), the server's CPU per call."""
    for i in range(WARM_UP):
        await echo(client, -i)
    latencies: list[float] = []
    numbers = iter(range(calls))

    async def lane() -> None:
        for i in numbers:
            latencies.append(await echo(client, i))

    cpu_before = cpu_s(server) if server else None
    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(width)))
    elapsed = time.perf_counter() - began
    figures = {"in_flight": width, "calls": calls, "calls_per_s": round(calls / elapsed, 1),
               **percentiles(latencies, 2)}  # fmt: skip
    cpu_after = cpu_s(server) if server else None
    if cpu_before is not None and cpu_after is not None:
        figures["server_cpu_ms_per_call"] = round((cpu_after - cpu_before) * 1000 / calls, 2)
    return figures


def overhead(direct: dict[str, Any], proxied: dict[str, Any]) -> dict[str, float]:
    return {
        "p50_ms": round(proxied["p50_ms"] - direct["p50_ms"], 2),
        "p99_ms": round(proxied["p99_ms"] - direct["p99_ms"], 2),
    }


async def over_stdio(directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with stdio(UPSTREAM) as client:
        direct = await sequential(client, args.calls)
        many_direct = await in_flight(client, args.in_flight, args.concurrent_calls)
    db = directory / "stdio.db"
    async with stdio(proxy_argv(db, "--no-ui")) as client:
        proxied = await sequential(client, args.calls)
        many = await in_flight(client, args.in_flight, args.concurrent_calls, str(db))
    out["a_sequential_direct"] = direct
    out["a_sequential_proxied"] = proxied
    out["a_proxy_adds"] = overhead(direct, proxied)
    out["c_in_flight_direct"] = many_direct
    out["c_in_flight_proxied"] = many
    return out


def over_http(directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    port = free_port()
    with listening([*UPSTREAM, "--http", str(port)], port) as url:
        direct = asyncio.run(both_ways(url, args))
    port = free_port()
    db = directory / "http.db"
    with listening(proxy_argv(db, "--http", "--port", str(port)), port) as url:
        proxied = asyncio.run(both_ways(url, args, str(db)))
    out["b_sequential_direct"] = direct["sequential"]
    out["b_sequential_proxied"] = proxied["sequential"]
    out["b_proxy_adds"] = overhead(direct["sequential"], proxied["sequential"])
    out["c_in_flight_direct"] = direct["in_flight"]
    out["c_in_flight_proxied"] = proxied["in_flight"]
    return out


async def both_ways(
    url: str, args: argparse.Namespace, server: str | None = None
) -> dict[str, Any]:
    async with http(url) as client:
        return {
            "sequential": await sequential(client, args.calls),
            "in_flight": await in_flight(client, args.in_flight, args.concurrent_calls, server),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--concurrent-calls", type=int, default=1000)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"cpus": os.cpu_count(), "tool": "echo (tests/proxy_upstream.py)"}
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        directory = Path(tmp)
        result["stdio"] = asyncio.run(over_stdio(directory, args))
        print(f"stdio: {json.dumps(result['stdio'])}", file=sys.stderr)
        if not args.skip_http:
            result["http"] = over_http(directory, args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
