"""Per-call overhead: keygate's router in-process and over stdio, against a direct httpx2 call
to the same simulator (the floor) and a bare MCP echo tool's round trip."""

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
from mcp_keygate.simulator import SimulatorThread  # noqa: E402

BODY = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hello"}]}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_us": statistics.median(values) * 1e6, "p99_us": pct(values, 0.99)}


async def direct(sim, n: int) -> list[float]:
    times = []
    async with httpx2.AsyncClient() as client:
        for _ in range(n):
            t = time.perf_counter()
            r = await client.post(
                f"{sim.openai_base}/chat/completions", json=BODY, headers={"Authorization": "Bearer sim-ok-bench"}
            )
            r.json()
            times.append(time.perf_counter() - t)
    return times


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


async def over_stdio(sim, n: int) -> dict[str, list[float]]:
    from mcp import Client, StdioServerParameters

    from .upstream import stdio_keygate

    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        keygate = stdio_keygate(sim.openai_base, Path(tmp), [f"sim-ok-bench{i:02d}" for i in range(10)])
        bare = StdioServerParameters(
            command=sys.executable, args=[str(ROOT / "bench" / "bare_server.py")], env=keygate.env
        )
        async with Client(keygate, mode="legacy") as client:
            await client.call_tool("complete", {"prompt": "warm up"})
            times = []
            for _ in range(n):
                t = time.perf_counter()
                await client.call_tool("complete", {"prompt": "hello"})
                times.append(time.perf_counter() - t)
            out["stdio_complete"] = times
        async with Client(bare, mode="legacy") as client:
            await client.call_tool("echo", {"text": "warm up"})
            times = []
            for _ in range(n):
                t = time.perf_counter()
                await client.call_tool("echo", {"text": "hello"})
                times.append(time.perf_counter() - t)
            out["stdio_echo"] = times
    return out


async def measure(n: int = 400) -> dict[str, dict[str, float]]:
    with SimulatorThread() as sim:
        await direct(sim, 50)  # warm up
        results = {
            "direct_httpx2": summary(await direct(sim, n)),
            "keygate_memory": summary(await in_process(sim, "memory", n, conversation=False)),
            "keygate_memory_streamed": summary(await in_process(sim, "memory", n, conversation=False, stream=True)),
            "keygate_sqlite": summary(await in_process(sim, "sqlite", n, conversation=False)),
            "keygate_sqlite_conversation": summary(await in_process(sim, "sqlite", n, conversation=True)),
        }
        stdio = await over_stdio(sim, n)
        results["stdio_complete"] = summary(stdio["stdio_complete"])
        results["stdio_echo"] = summary(stdio["stdio_echo"])
    floor = results["direct_httpx2"]["p50_us"]
    results["overhead"] = {
        "in_process_memory_p50_us": results["keygate_memory"]["p50_us"] - floor,
        "in_process_sqlite_p50_us": results["keygate_sqlite"]["p50_us"] - floor,
        "stdio_p50_us": results["stdio_complete"]["p50_us"] - floor - results["stdio_echo"]["p50_us"],
    }
    return results


if __name__ == "__main__":
    print(json.dumps(anyio.run(measure), indent=2))
