"""Key selection cost: one acquire + release on the in-process pool, at 10, 1,000 and 100,000 keys.

Run: python -m bench.selection
Two pool states: every key ready, and half of the keys cooling (parked by the index).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from mcp_keygate.keys import LocalKeyPool, PoolSettings
from mcp_keygate.keys.secret import keys_for
from mcp_keygate.outcomes import Outcome, Verdict

OK = Verdict(Outcome.OK, 200)
COOL = Verdict(Outcome.RATE_LIMITED, 429, 3600.0 - 1)


async def measure(n: int, cooling_share: float, picks: int, strategy: str) -> dict[str, Any]:
    keys = keys_for("p", [f"bench-key-{i:07d}-xxxxxxxx" for i in range(n)])
    pool = LocalKeyPool({"p": keys}, {"p": PoolSettings(strategy=strategy)})
    for _ in range(int(n * cooling_share)):  # cool half the keys the way calls would
        lease = await pool.acquire("p", "m")
        await pool.release(lease, COOL)
    return await _time_picks(pool, picks, {"keys": n, "cooling": cooling_share, "strategy": strategy})


async def _time_picks(pool: Any, picks: int, row: dict[str, Any]) -> dict[str, Any]:
    """p50/p99 of `acquire` over `picks` picks (each lease released, untimed, with a success)."""
    samples = []
    for _ in range(picks):
        started = time.perf_counter_ns()
        lease = await pool.acquire("p", "m")
        samples.append((time.perf_counter_ns() - started) / 1000)
        await pool.release(lease, OK)
    samples.sort()
    return {**row, "p50_us": statistics.median(samples), "p99_us": samples[int(len(samples) * 0.99) - 1]}


async def measure_redis(n: int, picks: int) -> dict[str, Any] | None:
    """The shared pool: one lease is a Redis transaction that reads every key of the provider."""
    import shutil
    import subprocess

    from .upstream import free_port

    server = shutil.which("redis-server")
    if server is None:
        return None
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from mcp_keygate.keys.redis_pool import RedisKeyPool

    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        redis = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        for _ in range(100):
            try:
                await redis.ping()
                break
            except RedisError:  # not listening yet
                await asyncio.sleep(0.05)
        keys = keys_for("p", [f"bench-key-{i:07d}-xxxxxxxx" for i in range(n)])
        pool = RedisKeyPool(redis, "bench", {"p": keys}, {"p": PoolSettings()})
        await pool.open()
        row = await _time_picks(pool, picks, {"keys": n, "cooling": 0.0, "strategy": "balanced, Redis"})
        await redis.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return row


def run(picks: int = 20_000) -> list[dict[str, Any]]:
    rows = []
    for strategy in ("balanced", "priority"):
        for n in (10, 1_000, 100_000):
            for cooling in (0.0, 0.5):
                rows.append(asyncio.run(measure(n, cooling, picks, strategy)))
    for n in (10, 1_000):
        row = asyncio.run(measure_redis(n, min(picks, 2_000)))
        if row is not None:
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--picks", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.picks)
    if args.json:
        print(json.dumps(rows))
        return
    for row in rows:
        print(
            f"{row['strategy']:>9} {row['keys']:>7} keys, {row['cooling']:.0%} cooling: "
            f"p50 {row['p50_us']:.1f} µs, p99 {row['p99_us']:.1f} µs"
        )


if __name__ == "__main__":
    main()
