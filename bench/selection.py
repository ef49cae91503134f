"""Key selection cost: one acquire (release untimed) at 10, 1,000 and 100,000 keys — on the
in-process pool, and on the shared Redis pool, old and new side by side.

Run: python -m bench.selection [--redis-only]
Two pool states for the in-process pool: every key ready, and half of the keys cooling (parked by
the index). The Redis rows also give leases/s with 32 concurrent callers in one instance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from mcp_keygate.keys import Fit, LocalKeyPool, PoolSettings
from mcp_keygate.keys.secret import keys_for
from mcp_keygate.outcomes import Headroom, Outcome, Verdict

OK = Verdict(Outcome.OK, 200)
SIZES = (10, 1_000, 100_000)
HEADROOM = Headroom(limit_requests=10**6, remaining_requests=10**6 - 1, reset_requests_s=60)
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


async def measure_redis(sizes: tuple[int, ...], picks: int, legacy_up_to: int = 1_000) -> list[dict[str, Any]]:
    """The shared pool on one local redis-server: one lease is one script call (new), or a WATCH
    transaction that reads every key of the provider (old, `legacy_redis_pool.py`, measured up to
    `legacy_up_to` keys: at 100,000 one pick takes over a second). Also leases/s with 32 concurrent
    callers in one instance: the old pool takes them in turn behind a lock, the new one does not."""
    import shutil
    import subprocess

    from .upstream import free_port

    server = shutil.which("redis-server")
    if server is None:
        return []
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from mcp_keygate.keys.redis_pool import RedisKeyPool

    from .legacy_redis_pool import RedisKeyPool as LegacyPool

    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    rows = []
    try:
        redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", max_connections=64)
        for _ in range(100):
            try:
                await redis.ping()
                break
            except RedisError:  # not listening yet
                await asyncio.sleep(0.05)
        for n in sizes:
            keys = keys_for("p", [f"bench-key-{i:07d}-xxxxxxxx" for i in range(n)])
            pools: list[tuple[str, Any]] = [("Redis, one script call", RedisKeyPool)]
            if n <= legacy_up_to:
                pools.append(("Redis, old (WATCH every key)", LegacyPool))
            for label, kind in pools:
                pool = kind(redis, f"bench-{len(rows)}", {"p": keys}, {"p": PoolSettings()})
                await pool.open()
                await _time_picks(pool, 50, {})  # warm up: the script is loaded, the model's index built
                row = await _time_picks(pool, picks, {"keys": n, "cooling": 0.0, "strategy": label})
                row["concurrent_leases_per_s"] = await _concurrent(pool, 32, min(picks, 2_000))
                rows.append(row)
            await redis.flushall()
        await redis.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


async def _concurrent(pool: Any, tasks: int, total: int) -> float:
    """Leases (each released with a success) per second, `tasks` callers at once in one instance."""
    left = total

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            lease = await pool.acquire("p", "m")
            if isinstance(lease, Fit):  # every key busy for a moment: look again
                await asyncio.sleep(0)
                left += 1
                continue
            await pool.release(lease, OK, HEADROOM)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(tasks)))
    return total / (time.perf_counter() - started)


def run(picks: int = 20_000) -> list[dict[str, Any]]:
    rows = []
    for strategy in ("balanced", "priority"):
        for n in SIZES:
            for cooling in (0.0, 0.5):
                rows.append(asyncio.run(measure(n, cooling, picks, strategy)))
    rows.extend(asyncio.run(measure_redis(SIZES, min(picks, 2_000))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--picks", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--redis-only", action="store_true", help="only the shared pool, old and new")
    args = parser.parse_args()
    rows = asyncio.run(measure_redis(SIZES, min(args.picks, 2_000))) if args.redis_only else run(args.picks)
    if args.json:
        print(json.dumps(rows))
        return
    for row in rows:
        concurrent = row.get("concurrent_leases_per_s")
        print(
            f"{row['strategy']:>9} {row['keys']:>7} keys, {row['cooling']:.0%} cooling: "
            f"p50 {row['p50_us']:.1f} µs, p99 {row['p99_us']:.1f} µs"
            + (f", {concurrent:.0f} leases/s with 32 callers" if concurrent else "")
        )


if __name__ == "__main__":
    main()
