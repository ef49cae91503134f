"""Key pool rules with a fake clock: cooldowns, quota parking, disabling, half-open probes, strategies,
and headroom steering. Every test runs against the in-process pool and the Redis pool alike."""

from __future__ import annotations

import pytest

from mcp_keygate.keys import ApiKey, Fit, KeyState, Lease, LocalKeyPool, PoolSettings
from mcp_keygate.keys.budget import NO_BUDGET
from mcp_keygate.outcomes import Headroom, Outcome, Verdict

from .redis_support import redis_pool_factory

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["local", "redis"])
def make_pool(request):
    """make_pool(n, strategy, budget=, key_budgets=, **settings) -> (pool, keys, clock) for the pool under test."""
    redis_factory = redis_pool_factory(request) if request.param == "redis" else None
    opened = []

    async def build(n: int = 3, strategy: str = "balanced", budget=NO_BUDGET, key_budgets=None, **settings):
        keys = [ApiKey.create("p", f"secret-key-number-{i:04d}", i) for i in range(n)]
        keys = [ApiKey.create("p", k.secret, k.index, (key_budgets or {}).get(k.key_id, budget)) for k in keys]
        clock = FakeClock()
        pool_settings = {"p": PoolSettings(strategy=strategy, **settings)}
        if redis_factory is None:
            pool = LocalKeyPool({"p": keys}, pool_settings, clock)
        else:
            pool = await redis_factory({"p": keys}, pool_settings, clock)
            opened.append(pool)
        return pool, keys, clock

    yield build


OK = Verdict(Outcome.OK, 200)


async def lease(pool, model: str = "m", exclude=()) -> Lease:
    got = await pool.acquire("p", model, exclude)
    assert isinstance(got, Lease), got
    return got


async def state_of(pool, key: ApiKey, model: str = "m") -> KeyState:
    record = next(r for r in await pool.records() if r.key_id == key.key_id)
    hold = record.hold_for(model, pool.now())
    return hold.state if hold else KeyState.READY


async def test_rate_limit_cools_only_that_model_for_the_server_wait(make_pool):
    pool, keys, clock = await make_pool(1)
    await pool.release(await lease(pool), Verdict(Outcome.RATE_LIMITED, 429, 30.0, "429"))
    assert await pool.acquire("p", "m") is Fit.HELD
    assert await pool.ready_in("p", "m") == pytest.approx(30.0)
    other = await lease(pool, "other-model")  # a per-minute limit for one model says nothing about another
    await pool.release(other, OK)
    clock.advance(30.1)
    assert isinstance(await pool.acquire("p", "m"), Lease)


async def test_default_cooldown_and_cap(make_pool):
    pool, keys, clock = await make_pool(2, cooldown_s=12, max_cooldown_s=100)
    first = await lease(pool)
    await pool.release(first, Verdict(Outcome.RATE_LIMITED, 429, None))
    assert await pool.ready_in("p", "m") == 0  # the other key is fine
    second = await lease(pool)
    await pool.release(second, Verdict(Outcome.RATE_LIMITED, 429, 500.0))
    records = {r.key_id: r for r in await pool.records()}
    assert records[first.key.key_id].model_holds["m"].until - clock.now == pytest.approx(12)
    assert records[second.key.key_id].model_holds["m"].until - clock.now == pytest.approx(100)


async def test_quota_parks_the_whole_key(make_pool):
    pool, keys, clock = await make_pool(1, quota_cooldown_s=7200)
    await pool.release(await lease(pool), Verdict(Outcome.QUOTA_EXHAUSTED, 429))
    assert await state_of(pool, keys[0]) is KeyState.EXHAUSTED
    assert await pool.acquire("p", "another") is Fit.HELD
    assert await pool.ready_in("p", "m") == pytest.approx(7200)
    clock.advance(7201)
    assert isinstance(await pool.acquire("p", "m"), Lease)


async def test_long_rate_limit_wait_is_treated_as_exhaustion(make_pool):
    pool, keys, _ = await make_pool(1)
    await pool.release(await lease(pool), Verdict(Outcome.RATE_LIMITED, 429, 86400.0))
    assert await state_of(pool, keys[0]) is KeyState.EXHAUSTED


async def test_auth_failure_disables_until_reset(make_pool):
    pool, keys, clock = await make_pool(1)
    await pool.release(await lease(pool), Verdict(Outcome.AUTH_FAILED, 401))
    clock.advance(10**7)
    assert await pool.acquire("p", "m") is Fit.HELD
    assert await pool.ready_in("p", "m") is None
    assert await pool.reset(keys[0].key_id)
    assert isinstance(await pool.acquire("p", "m"), Lease)


@pytest.mark.parametrize("outcome", [Outcome.OVERLOADED, Outcome.UPSTREAM_ERROR, Outcome.TIMEOUT, Outcome.BAD_REQUEST])
async def test_failures_not_about_the_key_leave_it_ready(make_pool, outcome):
    pool, keys, _ = await make_pool(1)
    await pool.release(await lease(pool), Verdict(outcome, 503))
    assert await state_of(pool, keys[0]) is KeyState.READY
    (record,) = await pool.records()
    assert record.failures == 1 and record.requests == 1


async def test_exactly_one_probe_after_a_cooldown_and_growing_cooldown_on_failure(make_pool):
    pool, keys, clock = await make_pool(1, cooldown_s=10)
    await pool.release(await lease(pool), Verdict(Outcome.RATE_LIMITED, 429, None))
    clock.advance(11)
    probe = await lease(pool)
    assert probe.probe
    assert await pool.acquire("p", "m") is Fit.BUSY  # a second caller waits for the probe's answer
    await pool.release(probe, Verdict(Outcome.RATE_LIMITED, 429, None))
    hold = (await pool.records())[0].model_holds["m"]
    assert hold.strikes == 2 and hold.until - clock.now == pytest.approx(20)
    clock.advance(21)
    probe = await lease(pool)
    await pool.release(probe, OK)
    assert (await pool.records())[0].model_holds == {}


async def test_unknown_headroom_allows_one_request_until_the_first_answer(make_pool):
    pool, keys, _ = await make_pool(1)
    first = await lease(pool)
    assert await pool.acquire("p", "m") is Fit.BUSY
    await pool.release(first, OK, None)  # no rate-limit headers: nothing to learn, no throttle
    a, b, c = await lease(pool), await lease(pool), await lease(pool)
    assert not any(x.probe for x in (a, b, c))


async def test_headroom_limits_requests_in_flight_and_cools_at_zero(make_pool):
    pool, keys, clock = await make_pool(1)
    first = await lease(pool)
    await pool.release(first, OK, Headroom(limit_requests=10, remaining_requests=3, reset_requests_s=40))
    leases = [await lease(pool) for _ in range(3)]
    assert await pool.acquire("p", "m") is Fit.BUSY  # three left, three in flight
    await pool.release(leases[0], OK, Headroom(limit_requests=10, remaining_requests=1, reset_requests_s=39))
    await pool.release(leases[1], OK, Headroom(limit_requests=10, remaining_requests=2, reset_requests_s=39))  # late
    assert await pool.acquire("p", "m") is Fit.BUSY  # one left (the lower report wins), one in flight
    await pool.release(leases[2], OK, Headroom(limit_requests=10, remaining_requests=0, reset_requests_s=38))
    assert await state_of(pool, keys[0]) is KeyState.COOLING  # told "0 left": steer away before any 429
    assert await pool.ready_in("p", "m") == pytest.approx(40, abs=0.01)
    clock.advance(41)
    assert (await lease(pool)).probe  # the window has reset: one probe, then the full limit again


async def test_balanced_spreads_concurrent_leases(make_pool):
    pool, keys, _ = await make_pool(3)
    for key_lease in [await lease(pool) for _ in range(3)]:
        await pool.release(key_lease, OK, Headroom(limit_requests=100, remaining_requests=90, reset_requests_s=60))
    leases = [await lease(pool) for _ in range(6)]
    assert sorted(x.key.index for x in leases) == [0, 0, 1, 1, 2, 2]


async def test_balanced_prefers_least_recently_used(make_pool):
    pool, keys, clock = await make_pool(3)
    used = []
    for _ in range(6):
        got = await lease(pool)
        used.append(got.key.index)
        await pool.release(got, OK)
        clock.advance(1)
    assert used == [0, 1, 2, 0, 1, 2]


async def test_priority_uses_first_key_until_unusable(make_pool):
    pool, keys, _ = await make_pool(3, strategy="priority")
    for _ in range(3):
        got = await lease(pool)
        assert got.key.index == 0
        await pool.release(got, OK)
    await pool.release(await lease(pool), Verdict(Outcome.QUOTA_EXHAUSTED, 429))
    assert (await lease(pool)).key.index == 1


async def test_round_robin_rotates_and_skips_unusable(make_pool):
    pool, keys, _ = await make_pool(3, strategy="round_robin")
    order = []
    for _ in range(4):
        got = await lease(pool)
        order.append(got.key.index)
        await pool.release(got, OK)
    assert order == [0, 1, 2, 0]
    await pool.release(await lease(pool), Verdict(Outcome.AUTH_FAILED, 401))  # key 1
    order = []
    for _ in range(3):
        got = await lease(pool)
        order.append(got.key.index)
        await pool.release(got, OK)
    assert 1 not in order


async def test_state_survives_a_round_trip_through_records():
    keys = [ApiKey.create("p", f"secret-key-number-{i:04d}", i) for i in range(2)]
    clock = FakeClock()
    pool = LocalKeyPool({"p": keys}, {}, clock)
    got = await lease(pool)
    await pool.release(got, Verdict(Outcome.RATE_LIMITED, 429, 30.0, "slow down"))
    saved = [type(r).from_dict(r.to_dict()) for r in pool.take_dirty()]
    fresh = LocalKeyPool({"p": keys}, {}, clock)
    fresh.load(saved)
    other = next(k for k in keys if k.key_id != got.key.key_id)
    assert await fresh.acquire("p", "m", exclude=[other.key_id]) is Fit.HELD
    assert (await lease(fresh)).key.key_id == other.key_id


async def test_records_of_removed_keys_are_ignored():
    keys = [ApiKey.create("p", "secret-key-number-0000", 0)]
    clock = FakeClock()
    pool = LocalKeyPool({"p": keys}, {}, clock)
    await pool.release(await lease(pool), Verdict(Outcome.AUTH_FAILED, 401))
    saved = pool.take_dirty()
    other = [ApiKey.create("p", "a-completely-new-secret", 0)]
    fresh = LocalKeyPool({"p": other}, {}, clock)
    fresh.load(saved)
    assert [r.key_id for r in await fresh.records()] == [other[0].key_id]
    assert isinstance(await fresh.acquire("p", "m"), Lease)


# -- client-side budgets ----------------------------------------------------------------------------


async def test_rpm_budget_holds_the_key_until_the_window_moves_on(make_pool):
    from mcp_keygate.keys.budget import Budget

    pool, keys, clock = await make_pool(1, budget=Budget(rpm=3))
    for _ in range(3):
        await pool.release(await lease(pool), OK)
        clock.advance(1)
    assert await pool.acquire("p", "m") is Fit.HELD  # the 4th request of the minute is never sent
    wait = await pool.ready_in("p", "m")
    assert 57 <= wait <= 59  # the first request's second leaves the window
    assert await state_of(pool, keys[0]) is KeyState.READY  # a budget is not a hold: nothing failed
    clock.advance(wait + 0.01)
    assert isinstance(await pool.acquire("p", "m"), Lease)


async def test_budget_counts_leases_in_flight_so_concurrency_cannot_overspend(make_pool):
    from mcp_keygate.keys.budget import Budget

    pool, keys, clock = await make_pool(2, budget=Budget(rpm=2))
    leases = []
    for _ in range(10):
        got = await pool.acquire("p", "m")
        if isinstance(got, Lease):
            leases.append(got)
        # Headroom is unknown, so each key takes one request at a time: release to open the next slot.
        for held in leases[len(leases) - 1 :]:
            await pool.release(held, OK)
    assert len(leases) == 4  # 2 keys × 2 rpm, however the calls interleave
    assert {lease.key.key_id for lease in leases} == {k.key_id for k in keys}


async def test_tpm_budget_charges_the_estimate_then_what_was_used(make_pool):
    from mcp_keygate.keys.budget import Budget

    pool, keys, clock = await make_pool(1, budget=Budget(tpm=1000))
    first = await pool.acquire("p", "m", cost=600)
    assert isinstance(first, Lease)
    await pool.release(first, OK, None, used_tokens=200)  # the answer was shorter than reserved
    second = await pool.acquire("p", "m", cost=700)
    assert isinstance(second, Lease)  # 200 + 700 ≤ 1000
    await pool.release(second, OK, None, used_tokens=700)
    assert await pool.acquire("p", "m", cost=200) is Fit.HELD  # 900 used
    assert isinstance(await pool.acquire("p", "m", cost=50), Lease)  # a smaller request still fits


async def test_per_key_budget_overrides_the_providers(make_pool):
    from mcp_keygate.keys.budget import Budget

    second_key = ApiKey.create("p", "secret-key-number-0001", 1).key_id
    pool, keys, clock = await make_pool(2, budget=Budget(rpm=1), key_budgets={second_key: Budget(rpm=3)})
    got = []
    for _ in range(6):
        one = await pool.acquire("p", "m")
        if isinstance(one, Lease):
            got.append(one.key.key_id)
            await pool.release(one, OK)
    assert got.count(keys[0].key_id) == 1
    assert got.count(keys[1].key_id) == 3


def test_budget_window_is_never_exceeded_at_any_moment():
    """Charge as fast as the budget allows at random times: no 60 s span ever holds more than rpm."""
    import random

    from mcp_keygate.keys.budget import Budget, charge, wait_for_budget

    budget, spend, sent = Budget(rpm=7), {}, []
    rng = random.Random(5)
    now = 1_000.0
    for _ in range(400):
        now += rng.uniform(0, 4)
        if wait_for_budget(spend, budget, now)[0] == 0:
            charge(spend, budget, now, 1, 0)
            sent.append(now)
    assert len(sent) >= 0.9 * 7 * (now - 1_000) / 60  # and the budget is used, not wasted
    for i, start in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < start + 60) <= 7


# -- large pools --------------------------------------------------------------------------------


async def test_a_large_pool_skips_held_keys_without_losing_any():
    keys = [ApiKey.create("p", f"secret-key-number-{i:06d}", i) for i in range(5000)]
    clock = FakeClock()
    pool = LocalKeyPool({"p": keys}, {"p": PoolSettings(cooldown_s=100)}, clock)
    seen = set()
    for _ in range(5000):  # every key once, each cooling after its request
        got = await lease(pool)
        seen.add(got.key.key_id)
        await pool.release(got, Verdict(Outcome.RATE_LIMITED, 429, None))
    assert len(seen) == 5000
    assert await pool.acquire("p", "m") is Fit.HELD
    clock.advance(100.1)
    probe = await lease(pool)  # every key is back, each as one half-open probe
    assert probe.probe
    await pool.release(probe, OK)
    await pool.reset(keys[0].key_id)


async def test_priority_in_a_large_pool_returns_to_the_first_key_after_its_cooldown():
    keys = [ApiKey.create("p", f"secret-key-number-{i:06d}", i) for i in range(1000)]
    clock = FakeClock()
    pool = LocalKeyPool({"p": keys}, {"p": PoolSettings(strategy="priority", cooldown_s=10)}, clock)
    first = await lease(pool)
    assert first.key.index == 0
    await pool.release(first, Verdict(Outcome.RATE_LIMITED, 429, None))
    second = await lease(pool)
    assert second.key.index == 1
    await pool.release(second, OK)
    clock.advance(10.1)
    assert (await lease(pool)).key.index == 0


def test_the_budget_says_which_limit_is_used_up():
    from mcp_keygate.keys.budget import Budget, charge, wait_for_budget

    spend: dict = {}
    budget = Budget(rpm=2, tpm=1000, rpd=100, tpd=5000)
    charge(spend, budget, 100.0, 1, 900)
    assert wait_for_budget(spend, budget, 100.5, 200)[1] == "client-side budget: 1000 tokens per minute used up"
    charge(spend, budget, 101.0, 1, 0)
    assert wait_for_budget(spend, budget, 101.5, 10)[1] == "client-side budget: 2 requests per minute used up"
    assert wait_for_budget(spend, budget, 200.0, 10) == (0.0, "")  # a minute later there is room again
    wait, why = wait_for_budget(spend, budget, 200.0, 6000)
    assert wait == float("inf") and "exceeds the budget" in why


async def test_state_changes_are_taken_at_once_counters_in_batches():
    keys = [ApiKey.create("p", f"secret-key-number-{i:04d}", i) for i in range(2)]
    pool = LocalKeyPool({"p": keys}, {"p": PoolSettings()}, FakeClock())
    await pool.release(await lease(pool), OK)  # counters only
    assert pool.take_dirty(state_changes_only=True) == []
    cooled = await lease(pool)
    await pool.release(cooled, Verdict(Outcome.RATE_LIMITED, 429, 30.0))
    urgent = pool.take_dirty(state_changes_only=True)
    assert [r.key_id for r in urgent] == [cooled.key.key_id] and urgent[0].model_holds
    assert pool.take_dirty(state_changes_only=True) == []
    rest = pool.take_dirty()  # the counters of the other key were kept for the batch
    assert [r.key_id for r in rest] != [] and cooled.key.key_id not in [r.key_id for r in rest]
    assert pool.take_dirty() == []


async def test_a_key_nearly_out_of_its_window_is_used_only_when_the_others_are_not(make_pool):
    pool, keys, clock = await make_pool(2)
    for key, remaining in ((keys[0], 5), (keys[1], 80)):  # both answered once; key 0 has 5 % left
        got = await lease(pool, exclude=[k.key_id for k in keys if k is not key])
        await pool.release(got, OK, Headroom(limit_requests=100, remaining_requests=remaining, reset_requests_s=30))
    for _ in range(3):  # balanced would alternate; the nearly-out key is spared while the other has room
        got = await lease(pool)
        assert got.key.key_id == keys[1].key_id
        await pool.release(got, OK, Headroom(limit_requests=100, remaining_requests=70, reset_requests_s=29))
    other = await lease(pool)
    await pool.release(other, OK, Headroom(limit_requests=100, remaining_requests=0, reset_requests_s=28))
    assert (await lease(pool)).key.key_id == keys[0].key_id  # …and serves when the other key cannot


def test_a_token_estimate_corrected_down_after_a_slow_call_is_refunded():
    """The estimate is charged at lease time; the answer comes seconds later, in a newer bucket: the
    refund must still reach the estimate, or a tpm budget fills with tokens never used."""
    from mcp_keygate.keys.budget import Budget, charge, wait_for_budget

    budget, spend, now = Budget(tpm=1000), {}, 1_000_000.0
    for call in range(6):
        started = now + call * 3
        charge(spend, budget, started, 1, 500)  # the lease: an estimate of 500 tokens
        charge(spend, budget, started + 2, 0, 100 - 500)  # two seconds later: 100 were used
        assert wait_for_budget(spend, budget, started + 2, 0)[0] == 0, call
    assert sum(b[2] for b in spend["minute"]) == 600  # six calls of 100 tokens
