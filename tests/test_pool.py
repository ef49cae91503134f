"""Key pool transitions with a fake clock: cooldowns, quota parking, disabling, half-open probes, strategies."""

from __future__ import annotations

import pytest

from mcp_keygate.keys import ApiKey, KeyPool, KeyState, PoolPolicy
from mcp_keygate.outcomes import Outcome, Verdict


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_pool(n: int = 3, strategy: str = "balanced", **policy) -> tuple[KeyPool, list[ApiKey], FakeClock]:
    keys = [ApiKey.create("p", f"secret-key-number-{i:04d}", i) for i in range(n)]
    clock = FakeClock()
    pool = KeyPool({"p": keys}, {"p": PoolPolicy(strategy=strategy, **policy)}, clock)
    return pool, keys, clock


OK = Verdict(Outcome.OK, 200)


def state_of(pool: KeyPool, key: ApiKey, model: str = "m") -> KeyState:
    record = next(r for r in pool.records() if r.key_id == key.key_id)
    hold = record.hold_for(model, pool.now())
    return hold.state if hold else KeyState.READY


def test_rate_limit_cools_only_that_model_for_the_server_wait():
    pool, _keys, clock = make_pool(1)
    lease = pool.acquire("p", "m")
    pool.release(lease, Verdict(Outcome.RATE_LIMITED, 429, 30.0, "429"))
    assert pool.acquire("p", "m") is None
    assert pool.ready_in("p", "m") == pytest.approx(30.0)
    other = pool.acquire("p", "other-model")
    assert other is not None  # a per-minute limit for one model says nothing about another
    pool.release(other, OK)
    clock.advance(30.1)
    assert pool.acquire("p", "m") is not None


def test_default_cooldown_and_cap():
    pool, _keys, clock = make_pool(2, cooldown_s=12, max_cooldown_s=100)
    lease = pool.acquire("p", "m")
    pool.release(lease, Verdict(Outcome.RATE_LIMITED, 429, None))
    assert pool.ready_in("p", "m") == 0  # the other key is fine
    lease2 = pool.acquire("p", "m")
    pool.release(lease2, Verdict(Outcome.RATE_LIMITED, 429, 500.0))
    records = {r.key_id: r for r in pool.records()}
    assert records[lease.key.key_id].model_holds["m"].until - clock.now == pytest.approx(12)
    assert records[lease2.key.key_id].model_holds["m"].until - clock.now == pytest.approx(100)


def test_quota_parks_the_whole_key():
    pool, keys, clock = make_pool(1, quota_cooldown_s=7200)
    lease = pool.acquire("p", "m")
    pool.release(lease, Verdict(Outcome.QUOTA_EXHAUSTED, 429))
    assert state_of(pool, keys[0], "m") is KeyState.EXHAUSTED
    assert pool.acquire("p", "another") is None
    assert pool.ready_in("p", "m") == pytest.approx(7200)
    clock.advance(7201)
    assert pool.acquire("p", "m") is not None


def test_long_rate_limit_wait_is_treated_as_exhaustion():
    pool, keys, _ = make_pool(1)
    lease = pool.acquire("p", "m")
    pool.release(lease, Verdict(Outcome.RATE_LIMITED, 429, 86400.0))
    assert state_of(pool, keys[0]) is KeyState.EXHAUSTED


def test_auth_failure_disables_until_reset():
    pool, keys, clock = make_pool(1)
    lease = pool.acquire("p", "m")
    pool.release(lease, Verdict(Outcome.AUTH_FAILED, 401))
    clock.advance(10**7)
    assert pool.acquire("p", "m") is None
    assert pool.ready_in("p", "m") is None
    assert pool.reset(keys[0].key_id)
    assert pool.acquire("p", "m") is not None


@pytest.mark.parametrize("outcome", [Outcome.OVERLOADED, Outcome.UPSTREAM_ERROR, Outcome.TIMEOUT, Outcome.BAD_REQUEST])
def test_failures_not_about_the_key_leave_it_ready(outcome):
    pool, keys, _ = make_pool(1)
    lease = pool.acquire("p", "m")
    pool.release(lease, Verdict(outcome, 503))
    assert state_of(pool, keys[0]) is KeyState.READY
    record = pool.records()[0]
    assert record.failures == 1 and record.requests == 1


def test_exactly_one_probe_after_a_cooldown_and_growing_cooldown_on_failure():
    pool, _keys, clock = make_pool(1, cooldown_s=10)
    lease = pool.acquire("p", "m")
    pool.release(lease, Verdict(Outcome.RATE_LIMITED, 429, None))
    clock.advance(11)
    probe = pool.acquire("p", "m")
    assert probe is not None and probe.probe
    assert pool.acquire("p", "m") is None  # a second caller waits for the probe's answer
    pool.release(probe, Verdict(Outcome.RATE_LIMITED, 429, None))
    hold = pool.records()[0].model_holds["m"]
    assert hold.strikes == 2 and hold.until - clock.now == pytest.approx(20)
    clock.advance(21)
    probe = pool.acquire("p", "m")
    pool.release(probe, OK)
    assert pool.records()[0].model_holds == {}
    first, second = pool.acquire("p", "m"), pool.acquire("p", "m")
    assert first is not None and second is not None and not first.probe


def test_balanced_spreads_concurrent_leases():
    pool, _keys, _ = make_pool(3)
    leases = [pool.acquire("p", "m") for _ in range(3)]
    assert len({lease.key.key_id for lease in leases}) == 3
    fourth = pool.acquire("p", "m")
    assert fourth is not None


def test_balanced_prefers_least_recently_used():
    pool, _keys, clock = make_pool(3)
    used = []
    for _ in range(6):
        lease = pool.acquire("p", "m")
        used.append(lease.key.index)
        pool.release(lease, OK)
        clock.advance(1)
    assert used == [0, 1, 2, 0, 1, 2]


def test_priority_uses_first_key_until_unusable():
    pool, _keys, _ = make_pool(3, strategy="priority")
    for _ in range(3):
        lease = pool.acquire("p", "m")
        assert lease.key.index == 0
        pool.release(lease, OK)
    lease = pool.acquire("p", "m")
    pool.release(lease, Verdict(Outcome.QUOTA_EXHAUSTED, 429))
    assert pool.acquire("p", "m").key.index == 1


def test_round_robin_rotates_and_skips_unusable():
    pool, _keys, _ = make_pool(3, strategy="round_robin")
    order = []
    for _ in range(4):
        lease = pool.acquire("p", "m")
        order.append(lease.key.index)
        pool.release(lease, OK)
    assert order == [0, 1, 2, 0]
    lease = pool.acquire("p", "m")  # key 1
    pool.release(lease, Verdict(Outcome.AUTH_FAILED, 401))
    order = [pool.acquire("p", "m").key.index for _ in range(3)]
    assert 1 not in order


def test_state_survives_a_round_trip_through_records():
    pool, keys, clock = make_pool(2)
    lease = pool.acquire("p", "m")
    pool.release(lease, Verdict(Outcome.RATE_LIMITED, 429, 30.0, "slow down"))
    saved = [type(r).from_dict(r.to_dict()) for r in pool.take_dirty()]
    fresh = KeyPool({"p": keys}, {}, clock)
    fresh.load(saved)
    other = next(k for k in keys if k.key_id != lease.key.key_id)
    assert fresh.acquire("p", "m", exclude=[other.key_id]) is None
    assert fresh.acquire("p", "m").key.key_id == other.key_id


def test_records_of_removed_keys_are_ignored():
    pool, _keys, clock = make_pool(1)
    lease = pool.acquire("p", "m")
    pool.release(lease, Verdict(Outcome.AUTH_FAILED, 401))
    saved = pool.take_dirty()
    other = [ApiKey.create("p", "a-completely-new-secret", 0)]
    fresh = KeyPool({"p": other}, {}, clock)
    fresh.load(saved)
    assert [r.key_id for r in fresh.records()] == [other[0].key_id]
    assert fresh.acquire("p", "m") is not None
