"""The Redis pool on its own, on real redis-servers: concurrent leases of one instance reach Redis
together (no local lock) and none is booked twice; every name carries the provider's hash tag;
a Redis that lost everything, or could not take a release, is caught up with by itself."""

from __future__ import annotations

import anyio
import pytest
from redis.asyncio import Redis

from mcp_keygate.errors import StoreError
from mcp_keygate.keys import ApiKey, Fit, Lease, PoolSettings
from mcp_keygate.keys.redis_pool import RedisKeyPool
from mcp_keygate.outcomes import Headroom, Outcome, Verdict

from .redis_support import start_redis, unique_prefix

pytestmark = pytest.mark.anyio

OK = Verdict(Outcome.OK, 200)


def make_keys(n: int, provider: str = "p") -> list[ApiKey]:
    return [ApiKey.create(provider, f"secret-{provider}-key-{i:04d}", i) for i in range(n)]


async def blocked_clients(admin: Redis) -> int:
    return int((await admin.info("clients"))["blocked_clients"])


async def test_concurrent_leases_of_one_instance_reach_redis_together_and_none_is_booked_twice(redis_url):
    n = 12
    keys = make_keys(n)
    pool = RedisKeyPool(Redis.from_url(url := redis_url, max_connections=64), unique_prefix(), {"p": keys})
    await pool.open()
    await pool.cancel(await pool.acquire("p", "m"))  # the script is loaded
    admin = Redis.from_url(url)
    leases: list[object] = []

    async def lease() -> None:
        leases.append(await pool.acquire("p", "m"))

    # Redis holds every script call while paused: with a lock in the instance only one call could be
    # waiting there; without one, all of them are.
    await admin.client_pause(30_000, all=False)
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(n + 3):
                tg.start_soon(lease)
            with anyio.fail_after(20):
                while await blocked_clients(admin) < n + 3:
                    await anyio.sleep(0.01)
            assert await blocked_clients(admin) == n + 3
            await admin.client_unpause()
    finally:
        await admin.client_unpause()
    got = [x for x in leases if isinstance(x, Lease)]
    # Headroom unknown: one request per key until it answers. Twelve keys, twelve leases, three waits.
    assert sorted(x.key.index for x in got) == list(range(n))
    assert [x for x in leases if not isinstance(x, Lease)] == [Fit.BUSY] * 3
    assert len({x.ticket for x in got}) == n


async def test_many_concurrent_leases_on_a_headroom_window_book_exactly_what_is_left(redis_url):
    keys = make_keys(3)
    pool = RedisKeyPool(Redis.from_url(redis_url, max_connections=64), unique_prefix(), {"p": keys})
    await pool.open()
    for _ in range(3):  # every key says: 5 requests left in this window
        first = await pool.acquire("p", "m")
        assert isinstance(first, Lease)
        await pool.release(first, OK, Headroom(limit_requests=10, remaining_requests=5, reset_requests_s=60))
    results: list[object] = []

    async def lease() -> None:
        results.append(await pool.acquire("p", "m"))

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(lease)
    got = [x for x in results if isinstance(x, Lease)]
    assert len(got) == 15 and sorted(x.key.index for x in got) == [0] * 5 + [1] * 5 + [2] * 5
    assert results.count(Fit.BUSY) == 25


async def test_every_name_of_a_provider_carries_its_hash_tag(redis_url):
    prefix = unique_prefix()
    redis = Redis.from_url(redis_url)
    pool = RedisKeyPool(redis, prefix, {"alpha": make_keys(3, "alpha"), "beta": make_keys(2, "beta")})
    await pool.open()
    for provider in ("alpha", "beta"):
        got = await pool.acquire(provider, "m")
        assert isinstance(got, Lease)
        await pool.release(got, Verdict(Outcome.RATE_LIMITED, 429, 30.0))
        assert await pool.acquire(provider, "m", [got.key.key_id]) != Fit.HELD
    names = [n.decode() async for n in redis.scan_iter(f"{prefix}:*")]
    tagged = [n for n in names if n != f"{prefix}:keys"]  # the id list `status` reads, outside any script
    assert tagged and all(n.startswith((f"{prefix}:{{alpha}}:", f"{prefix}:{{beta}}:")) for n in tagged), names
    assert not any("secret" in n for n in names)


async def test_a_redis_that_lost_everything_is_filled_again_by_the_next_call(tmp_path):
    proc, url = start_redis(tmp_path)
    try:
        redis = Redis.from_url(url)
        pool = RedisKeyPool(redis, unique_prefix(), {"p": make_keys(2)}, {"p": PoolSettings(strategy="priority")})
        await pool.open()
        await pool.release(await pool.acquire("p", "m"), OK)
        await redis.flushall()  # a restart without persistence, or an operator's FLUSHALL
        got = await pool.acquire("p", "m")
        assert isinstance(got, Lease) and got.key.index == 0
        assert len(await pool.records("p")) == 2 and await pool.ready_in("p", "m") == 0
    finally:
        proc.kill()
        proc.wait()


async def test_a_release_redis_could_not_take_is_replayed_when_it_answers_again(tmp_path):
    proc, url = start_redis(tmp_path, appendonly=True)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    redis = Redis.from_url(url)
    pool = RedisKeyPool(redis, unique_prefix(), {"p": make_keys(1)})
    try:
        await pool.open()
        lease = await pool.acquire("p", "m")  # acknowledged, so on disk: it survives the crash
        assert isinstance(lease, Lease)
        proc.kill()
        proc.wait()
        with pytest.raises(StoreError) as down:
            await pool.release(lease, Verdict(Outcome.RATE_LIMITED, 429, 120.0, "slow down"))
        assert "cannot use Redis at" in str(down.value) and "\n" not in str(down.value)
        with pytest.raises(StoreError):
            await pool.cancel(lease)  # the router's clean-up, failing too: both wait for Redis
        proc, _ = start_redis(tmp_path, port=port, appendonly=True)
        assert await pool.acquire("p", "m") is Fit.HELD  # the 429 reached Redis first: the key is cooling
        (record,) = await pool.records("p")
        assert record.requests == 1 and record.model_holds["m"].reason == "slow down"
        names = pool._names["p"]
        assert await redis.hlen(names.fixed()[4]) == 0 and await redis.zcard(names.fixed()[2]) == 0  # nothing in flight
    finally:
        proc.kill()
        proc.wait()
