"""keygate's router and LiteLLM's `Router` side by side, same simulator, same keys, same limits.

- overhead: per-call latency over a zero-latency upstream at concurrency 1 and 64, against a bare
  httpx2 call (the floor);
- storm: 20 keys at 10 rpm each and ~2.4× more demand than that for a little over two windows;
- quota: 10 keys of which 5 answer `insufficient_quota`.

Run: python -m bench.compare [--quick]   (needs the bench extra: pip install -e ".[bench]")
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import anyio
import httpx2

from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate

from .upstream import SimProcess, Upstream

MODEL = "gpt-4.1-mini"
MESSAGES = [{"role": "user", "content": "hello"}]
Call = Callable[[], Awaitable[Any]]


def keygate_config(base: str, keys: list[str], tmp: str, backend: str = "memory", **provider: Any):
    return parse_config(
        {
            "state": {"backend": backend, "path": str(Path(tmp) / "state.db")},
            "providers": {"p": {"base_url": base, "keys": keys, "stream": False, **provider}},
            "models": {"mini": {"provider": "p", "model": MODEL}},
        }
    )


def litellm_router(base: str, keys: list[str], rpm: int | None = None):
    import litellm
    from litellm import Router

    litellm.suppress_debug_info = True
    deployments = []
    for key in keys:
        params: dict[str, Any] = {"model": f"openai/{MODEL}", "api_key": key, "api_base": base}
        if rpm is not None:
            params["rpm"] = rpm
        deployments.append({"model_name": "mini", "litellm_params": params})
    if rpm is None:
        return Router(model_list=deployments)
    return Router(model_list=deployments, routing_strategy="usage-based-routing-v2")


# -- overhead -------------------------------------------------------------------------------------


async def _latencies(call: Call, calls: int, concurrency: int) -> list[float]:
    times: list[float] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            started = time.perf_counter()
            await call()
            times.append(time.perf_counter() - started)

    for _ in range(20):  # warm up (connections, caches)
        await call()
    async with anyio.create_task_group() as tg:
        for i in range(concurrency):
            tg.start_soon(worker, calls // concurrency + (1 if i < calls % concurrency else 0))
    return times


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
    }


async def overhead(calls: int, concurrency: int) -> dict[str, dict[str, float]]:
    keys = [f"sim-ok-bench{i:02d}" for i in range(10)]
    out: dict[str, dict[str, float]] = {}
    with SimProcess() as sim, tempfile.TemporaryDirectory() as tmp:
        async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=200)) as client:

            async def floor() -> None:
                response = await client.post(
                    f"{sim.openai_base}/chat/completions",
                    json={"model": MODEL, "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {keys[0]}"},
                )
                response.json()

            out["httpx2 (floor)"] = _summary(await _latencies(floor, calls, concurrency))
        for backend in ("memory", "sqlite"):
            async with Keygate(keygate_config(sim.openai_base, keys, tmp, backend)) as gate:

                async def via_keygate(gate: Keygate = gate) -> None:
                    await gate.complete(CompleteRequest(prompt="hello"))

                label = "keygate router" + (" (SQLite, durable)" if backend == "sqlite" else "")
                out[label] = _summary(await _latencies(via_keygate, calls, concurrency))
        router = litellm_router(sim.openai_base, keys)

        async def via_litellm() -> None:
            await router.acompletion(model="mini", messages=MESSAGES)

        out["LiteLLM Router"] = _summary(await _latencies(via_litellm, calls, concurrency))
    return out


# -- storm and quota ------------------------------------------------------------------------------


async def _drive(call: Call, rate: float, seconds: float) -> tuple[int, int]:
    """Fire `call` at a fixed rate (open loop, like independent agents) and count answers and errors."""
    ok = failed = 0

    async def one() -> None:
        nonlocal ok, failed
        try:
            await call()
            ok += 1
        except Exception:
            failed += 1

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        n = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = n / rate
            if due > elapsed:
                await anyio.sleep(due - elapsed)
            tg.start_soon(one)
            n += 1
    return ok, failed


def _row(ok: int, failed: int, upstream: Upstream) -> dict[str, int]:
    return {
        "calls": ok + failed,
        "answered": ok,
        "errors": failed,
        "upstream_requests": upstream.requests,
        "429s_received": upstream.rate_limited,
        "quota_refusals": upstream.quota_refusals,
        "on_keys_known_unusable": upstream.on_known_unusable,
    }


async def _systems_run(
    scenario: dict[str, Any], keys: list[str], systems: dict[str, dict[str, Any]], rate: float, seconds: float
) -> dict[str, dict[str, int]]:
    """Each system against its own simulator with the same scenario, all at once (the clock is shared)."""
    results: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sims = {name: SimProcess(scenario) for name in systems}
        for sim in sims.values():
            sim.__enter__()
        try:

            async def run(name: str, spec: dict[str, Any]) -> None:
                sim = sims[name]
                if spec["kind"] == "litellm":
                    router = litellm_router(sim.openai_base, keys, spec.get("rpm"))

                    async def call() -> None:
                        await router.acompletion(model="mini", messages=MESSAGES)

                    ok, failed = await _drive(call, rate, seconds)
                else:
                    config = keygate_config(sim.openai_base, keys, f"{tmp}/{name}", **spec.get("provider", {}))
                    Path(f"{tmp}/{name}").mkdir(exist_ok=True)
                    async with Keygate(config) as gate:

                        async def call() -> None:
                            await gate.complete(CompleteRequest(prompt="hello"))  # its default wait (20 s), like a user

                        ok, failed = await _drive(call, rate, seconds)
                results[name] = _row(ok, failed, Upstream.from_log(sim.log()))

            async with anyio.create_task_group() as tg:
                for name, spec in systems.items():
                    tg.start_soon(run, name, spec)
        finally:
            for sim in sims.values():
                sim.__exit__()
    return results


async def storm(seconds: float, keys_n: int = 20, rpm: int = 10) -> dict[str, dict[str, int]]:
    keys = [f"sim-ok-storm{i:02d}" for i in range(keys_n)]
    scenario = {"keys": {k: {"rpm": rpm} for k in keys}}
    capacity_per_s = keys_n * rpm / 60
    systems = {
        "keygate (headers only)": {"kind": "keygate"},
        f"keygate (budget rpm={rpm})": {"kind": "keygate", "provider": {"rpm": rpm}},
        "LiteLLM Router (defaults)": {"kind": "litellm"},
        f"LiteLLM Router (rpm={rpm}, usage-based-routing-v2)": {"kind": "litellm", "rpm": rpm},
    }
    return await _systems_run(scenario, keys, systems, 2.4 * capacity_per_s, seconds)


async def quota(seconds: float) -> dict[str, dict[str, int]]:
    keys = [f"sim-quota-q{i:02d}xxxxxxxx" for i in range(5)] + [f"sim-ok-q{i:02d}xxxxxxxx" for i in range(5)]
    systems = {"keygate": {"kind": "keygate"}, "LiteLLM Router (defaults)": {"kind": "litellm"}}
    return await _systems_run({}, keys, systems, 10.0, seconds)


async def measure(quick: bool = False) -> dict[str, Any]:
    calls = 1000 if quick else 3000
    return {
        "overhead_c1": await overhead(calls // 3, 1),
        "overhead_c64": await overhead(calls, 64),
        "storm": await storm(70.0 if quick else 130.0),
        "quota": await quota(10.0 if quick else 30.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls, one storm window")
    args = parser.parse_args()
    print(json.dumps(anyio.run(measure, args.quick), indent=2))


if __name__ == "__main__":
    main()
