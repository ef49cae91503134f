"""Per-call overhead: keygate's router in-process and over stdio, against a direct httpx2 call
to the same simulator (the floor) and a bare MCP echo tool's round trip.

The simulator runs in its own process (as a real upstream would: sharing this process's GIL would
slow the floor and hide part of keygate's cost). Over stdio keygate runs as a user gets it: INFO
logging, a new conversation written to SQLite each call, and streamed upstream replies (with the
non-streamed figure beside it). The systems are called in turn, 50 calls each, so drift on a
shared machine hits all alike.

Run: python -m bench.overhead [--calls 400]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp_keygate.complete_request import CompleteRequest  # noqa: E402
from mcp_keygate.config import parse_config  # noqa: E402
from mcp_keygate.gateway import Keygate  # noqa: E402

BODY = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hello"}]}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_us": statistics.median(values) * 1e6, "p99_us": pct(values, 0.99)}


async def direct_call(client: httpx2.AsyncClient, sim, stream: bool) -> float:
    """One upstream call made directly (the floor): the reply read whole, or its stream to the end."""
    url = f"{sim.openai_base}/chat/completions"
    headers = {"Authorization": "Bearer sim-ok-bench"}
    t = time.perf_counter()
    if stream:
        async with client.stream("POST", url, json={**BODY, "stream": True}, headers=headers) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    json.loads(line[6:])
    else:
        r = await client.post(url, json=BODY, headers=headers)
        r.json()
    return time.perf_counter() - t


async def direct(sim, n: int, stream: bool = False) -> list[float]:
    async with httpx2.AsyncClient() as client:
        return [await direct_call(client, sim, stream) for _ in range(n)]


def config(sim, backend: str, tmp: str, stream: bool = False):
    return parse_config(
        {
            "state": {"backend": backend, "path": str(Path(tmp) / "state.db")},
            "providers": {
                "p": {
                    "base_url": sim.openai_base,
                    "keys": [f"sim-ok-bench{i:02d}" for i in range(10)],
                    "stream": stream,
                }
            },
            "models": {"mini": {"provider": "p", "model": "gpt-4.1-mini"}},
        }
    )


async def in_process(sim, backend: str, n: int, conversation: bool, stream: bool = False) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with Keygate(config(sim, backend, tmp, stream)) as gate:
            times = []
            cid = None
            for _ in range(n):
                t = time.perf_counter()
                result = await gate.complete(CompleteRequest(prompt="hello", conversation_id=cid))
                times.append(time.perf_counter() - t)
                cid = result.conversation_id if conversation else None
            return times


STDIO_SYSTEMS = {
    "stdio_complete": {"log_level": "INFO", "stream": True},  # what a user gets
    "stdio_complete_unstreamed": {"log_level": "INFO", "stream": False},
    # What the README's earlier 0.66 ms measured: WARNING logging, unstreamed, the httpx2 transport.
    "stdio_complete_warning_unstreamed_httpx2": {"log_level": "WARNING", "stream": False, "upstream_client": "httpx2"},
}


BLOCK = 50  # calls in a row to one system: warm, as a busy agent's server is; blocks alternate


async def over_stdio(sim, n: int) -> dict[str, list[float]]:
    """keygate (default settings, and unstreamed), a bare echo server and direct calls, in turn."""
    from contextlib import AsyncExitStack

    from mcp import Client, StdioServerParameters

    from .upstream import stdio_keygate

    keys = [f"sim-ok-bench{i:02d}" for i in range(10)]
    out: dict[str, list[float]] = {name: [] for name in [*STDIO_SYSTEMS, "stdio_echo", "direct", "direct_streamed"]}
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            calls = {}
            for name, settings in STDIO_SYSTEMS.items():
                workdir = Path(tmp) / name
                workdir.mkdir()
                client = await stack.enter_async_context(
                    Client(stdio_keygate(sim.openai_base, workdir, keys, **settings), mode="legacy")
                )
                calls[name] = (client, "complete", {"prompt": "hello"})
            bare = StdioServerParameters(command=sys.executable, args=[str(ROOT / "bench" / "bare_server.py")])
            calls["stdio_echo"] = (await stack.enter_async_context(Client(bare, mode="legacy")), "echo", {"text": "hi"})
            http = await stack.enter_async_context(httpx2.AsyncClient())
            for _ in range(20):  # warm up: imports, price table, connections
                for client, tool, args in calls.values():
                    await client.call_tool(tool, args)
                await direct_call(http, sim, False)
                await direct_call(http, sim, True)
            for _ in range(max(1, n // BLOCK)):
                for name, (client, tool, args) in calls.items():
                    for _ in range(BLOCK):
                        t = time.perf_counter()
                        await client.call_tool(tool, args)
                        out[name].append(time.perf_counter() - t)
                for stream in (False, True):
                    out["direct_streamed" if stream else "direct"] += [
                        await direct_call(http, sim, stream) for _ in range(BLOCK)
                    ]
    return out


async def measure(n: int = 400, in_process_rows: bool = True, sim_in_process: bool = False) -> dict:
    """With `sim_in_process`, the simulator runs as a thread of this process, as this benchmark once
    had it: the floor (direct calls) then shares the GIL with it (kept to reconcile old figures)."""
    from mcp_keygate.simulator import SimulatorThread

    from .upstream import SimProcess

    with SimulatorThread() if sim_in_process else SimProcess() as sim:
        results: dict[str, dict[str, float]] = {}
        if in_process_rows:
            await direct(sim, 50)  # warm up
            results["direct_httpx2"] = summary(await direct(sim, n))
            results["keygate_memory"] = summary(await in_process(sim, "memory", n, conversation=False))
            results["keygate_memory_streamed"] = summary(
                await in_process(sim, "memory", n, conversation=False, stream=True)
            )
            results["keygate_sqlite"] = summary(await in_process(sim, "sqlite", n, conversation=False))
            results["keygate_sqlite_conversation"] = summary(await in_process(sim, "sqlite", n, conversation=True))
        stdio = await over_stdio(sim, n)
    for name, times in stdio.items():
        results[name if name.startswith("stdio") else f"{name}_interleaved"] = summary(times)
    echo = results["stdio_echo"]["p50_us"]
    plain, streamed = results["direct_interleaved"]["p50_us"], results["direct_streamed_interleaved"]["p50_us"]
    results["overhead"] = {
        "stdio_p50_us": results["stdio_complete"]["p50_us"] - streamed - echo,
        "stdio_unstreamed_p50_us": results["stdio_complete_unstreamed"]["p50_us"] - plain - echo,
        "stdio_warning_unstreamed_httpx2_p50_us": results["stdio_complete_warning_unstreamed_httpx2"]["p50_us"]
        - plain
        - echo,
    }
    if in_process_rows:
        floor = results["direct_httpx2"]["p50_us"]
        results["overhead"]["in_process_memory_p50_us"] = results["keygate_memory"]["p50_us"] - floor
        results["overhead"]["in_process_sqlite_p50_us"] = results["keygate_sqlite"]["p50_us"] - floor
    return results


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--stdio-only", action="store_true", help="leave out the in-process rows")
    parser.add_argument("--sim-in-process", action="store_true", help="the simulator as a thread of this process")
    opts = parser.parse_args()
    print(json.dumps(anyio.run(measure, opts.calls, not opts.stdio_only, opts.sim_in_process), indent=2))


if __name__ == "__main__":
    main()
