"""The in-process pool and the Redis pool decide alike: the same scenarios, step by step, through a
LocalKeyPool and a RedisKeyPool on a real redis-server, must give identical outcomes — the key
leased (and whether as a probe), BUSY or HELD, the wait `ready_in` announces, every key's state and,
at the end, every record (holds, windows, counters, budget spend) to the last bit.

`rules.py` and `index.py` are the specification; `pool.lua` says the same once more, inside Redis.
A table of named scenarios covers each rule; seeded random runs cover their interplay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from mcp_keygate.keys import ApiKey, Lease, LocalKeyPool, PoolSettings
from mcp_keygate.keys.budget import NO_BUDGET, Budget
from mcp_keygate.keys.rules import key_state
from mcp_keygate.outcomes import Headroom, Outcome, Verdict

from .redis_support import unique_prefix

pytestmark = pytest.mark.anyio

OK = Verdict(Outcome.OK, 200)
COOL = Verdict(Outcome.RATE_LIMITED, 429, None, "429")
COOL_30 = Verdict(Outcome.RATE_LIMITED, 429, 30.0, "slow down")
DAY = Verdict(Outcome.RATE_LIMITED, 429, 86_400.0, "per-day limit")
QUOTA = Verdict(Outcome.QUOTA_EXHAUSTED, 429, None, "insufficient_quota")
AUTH = Verdict(Outcome.AUTH_FAILED, 401, None, "invalid key")
BUSY_UPSTREAM = Verdict(Outcome.OVERLOADED, 529, 3.0, "overloaded")
TIMEOUT = Verdict(Outcome.TIMEOUT, None, None, "timed out")


def window(remaining: int, reset_s: float = 40.0, limit: int = 10) -> Headroom:
    return Headroom(limit_requests=limit, remaining_requests=remaining, reset_requests_s=reset_s)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Run:
    """One pool going through a scenario, writing down what it answered at every step."""

    pool: Any
    keys: list[ApiKey]
    clock: Clock
    leases: list[Lease | None] = field(default_factory=list)
    trace: list[Any] = field(default_factory=list)

    async def step(self, op: str, *args: Any) -> None:
        self.trace.append((op, args, await getattr(self, op)(*args)))

    async def acquire(self, model: str = "m", exclude: tuple[int, ...] = (), cost: int = 0) -> Any:
        got = await self.pool.acquire("p", model, [self.keys[i].key_id for i in exclude], cost)
        if isinstance(got, Lease):
            self.leases.append(got)
            return ("lease", got.key.index, got.probe, len(self.leases) - 1)
        return got.value

    async def release(self, n: int, verdict: Verdict, headroom: Headroom | None = None, used: int | None = None) -> Any:
        lease, self.leases[n] = self.leases[n], None
        assert lease is not None
        await self.pool.release(lease, verdict, headroom, used)

    async def cancel(self, n: int) -> Any:
        lease, self.leases[n] = self.leases[n], None
        assert lease is not None
        await self.pool.cancel(lease)

    async def advance(self, seconds: float) -> Any:
        self.clock.now += seconds

    async def reset(self, i: int) -> Any:
        return await self.pool.reset(self.keys[i].key_id)

    async def ready_in(self, model: str = "m") -> Any:
        return await self.pool.ready_in("p", model)

    async def states(self, model: str | None = "m") -> Any:
        return [key_state(r, model, self.clock.now).value for r in await self.pool.records("p")]

    def open_leases(self) -> list[int]:
        return [i for i, lease in enumerate(self.leases) if lease is not None]


@pytest.fixture
def both(request):
    """both(n, strategy, budgets) -> (local run, Redis run), over identical keys and clocks."""
    url = request.getfixturevalue("redis_url")
    clients = []

    async def build(n: int = 3, strategy: str = "balanced", budgets: dict[int, Budget] | None = None, **settings):
        from redis.asyncio import Redis

        from mcp_keygate.keys.redis_pool import RedisKeyPool

        keys = [
            ApiKey.create("p", f"secret-key-number-{i:04d}", i, (budgets or {}).get(i, NO_BUDGET)) for i in range(n)
        ]
        pool_settings = {"p": PoolSettings(strategy=strategy, **settings)}
        local_clock = Clock()
        local = Run(LocalKeyPool({"p": keys}, pool_settings, local_clock), keys, local_clock)
        redis = Redis.from_url(url)
        clients.append(redis)
        clock = Clock()
        # Leases never expire here: the local pool has no expiry to compare with.
        shared = RedisKeyPool(redis, unique_prefix(), {"p": keys}, pool_settings, clock, lease_ttl_s=1e9)
        await shared.open()
        return local, Run(shared, keys, clock)

    yield build


async def run_both(local: Run, shared: Run, steps: list[tuple]) -> None:
    for op, *args in steps:
        await local.step(op, *args)
        await shared.step(op, *args)
        assert shared.trace[-1] == local.trace[-1], f"step {len(local.trace) - 1}: {op}{tuple(args)}"
    await finish(local, shared)


async def finish(local: Run, shared: Run) -> None:
    for model in ("m", "n", None):
        await local.step("states", model)
        await shared.step("states", model)
    assert shared.trace == local.trace
    assert [r.to_dict() for r in await shared.pool.records()] == [r.to_dict() for r in await local.pool.records()]


# Each: (strategy, keys, budgets by key index, settings, steps).
SCENARIOS: dict[str, tuple[str, int, dict[int, Budget], dict, list[tuple]]] = {
    "cooldown for one model, server's wait": (
        "balanced",
        1,
        {},
        {},
        [
            ("acquire",),
            ("release", 0, COOL_30),
            ("acquire",),
            ("ready_in",),
            ("acquire", "n"),
            ("release", 1, OK),
            ("advance", 30.1),
            ("acquire",),
        ],
    ),
    "default cooldown doubles on a failed probe, capped": (
        "balanced",
        2,
        {},
        {"cooldown_s": 12, "max_cooldown_s": 40},
        [
            ("acquire", "m", (1,)),
            ("release", 0, COOL),
            ("advance", 12.5),
            ("acquire", "m", (1,)),
            ("acquire", "m", (1,)),
            ("release", 1, COOL),
            ("ready_in",),
            ("advance", 25),
            ("acquire", "m", (1,)),
            ("release", 2, COOL),
            ("ready_in",),
            ("advance", 41),
            ("acquire", "m", (1,)),
            ("release", 3, OK),
            ("acquire",),
        ],
    ),
    "quota parks the whole key, a long 429 too": (
        "balanced",
        2,
        {},
        {"quota_cooldown_s": 7200},
        [
            ("acquire",),
            ("release", 0, QUOTA),
            ("acquire", "n"),
            ("release", 1, DAY),
            ("acquire",),
            ("ready_in",),
            ("advance", 7201),
            ("acquire",),
            ("ready_in", "n"),
        ],
    ),
    "auth failure disables until a reset": (
        "priority",
        2,
        {},
        {},
        [
            ("acquire",),
            ("release", 0, AUTH),
            ("advance", 10**6),
            ("acquire",),
            ("release", 1, AUTH),
            ("acquire",),
            ("ready_in",),
            ("reset", 0),
            ("acquire",),
            ("reset", 1),
            ("ready_in",),
        ],
    ),
    "failures that say nothing about the key": (
        "balanced",
        2,
        {},
        {},
        [
            ("acquire",),
            ("release", 0, BUSY_UPSTREAM),
            ("acquire",),
            ("release", 1, TIMEOUT),
            ("acquire",),
            ("acquire",),
        ],
    ),
    "headroom: in flight up to what is left, cool at zero, one probe after the reset": (
        "balanced",
        1,
        {},
        {},
        [
            ("acquire",),
            ("acquire",),
            ("release", 0, OK, window(3)),
            ("acquire",),
            ("acquire",),
            ("acquire",),
            ("acquire",),
            ("release", 1, OK, window(1, 39)),
            ("release", 2, OK, window(2, 39)),
            ("acquire",),
            ("release", 3, OK, window(0, 38)),
            ("acquire",),
            ("ready_in",),
            ("advance", 41),
            ("acquire",),
            ("acquire",),
            ("release", 4, OK, window(9)),
            ("acquire",),
        ],
    ),
    "silent provider: no throttle after the first answer": (
        "balanced",
        1,
        {},
        {},
        [("acquire",), ("acquire",), ("release", 0, OK), ("acquire",), ("acquire",), ("acquire",)],
    ),
    "balanced: least in flight, least recently used, nearly-out keys last": (
        "balanced",
        3,
        {},
        {},
        [
            ("acquire",),
            ("acquire",),
            ("acquire",),
            ("release", 0, OK, window(1, 30, 100)),
            ("release", 1, OK, window(80, 30, 100)),
            ("release", 2, OK, window(90, 30, 100)),
            ("advance", 1),
            *[("acquire",)] * 6,
            ("release", 5, OK, window(70, 29, 100)),
            ("advance", 1),
            ("acquire",),
            ("acquire",),
        ],
    ),
    "priority returns to the first key after its cooldown": (
        "priority",
        3,
        {},
        {"cooldown_s": 10},
        [
            ("acquire",),
            ("release", 0, COOL),
            ("acquire",),
            ("release", 1, OK),
            ("acquire",),
            ("release", 2, OK),
            ("advance", 10.1),
            ("acquire",),
            ("acquire",),
            ("release", 3, OK),
            ("acquire",),
        ],
    ),
    "round robin rotates and skips what is unusable": (
        "round_robin",
        4,
        {},
        {},
        [
            *[step for i in range(5) for step in (("acquire",), ("release", i, OK))],
            ("acquire",),
            ("release", 5, AUTH),
            *[step for i in range(6, 11) for step in (("acquire",), ("release", i, OK))],
        ],
    ),
    "rpm budget: charged at the lease, held until the window moves on": (
        "balanced",
        2,
        {0: Budget(rpm=2), 1: Budget(rpm=3)},
        {},
        [
            *[step for i in range(5) for step in (("acquire",), ("release", i, OK), ("advance", 1))],
            ("acquire",),
            ("ready_in",),
            ("advance", 55),
            ("acquire",),
            ("ready_in",),
        ],
    ),
    "token budgets: estimate at the lease, corrected by what was used": (
        "balanced",
        1,
        {0: Budget(tpm=1000, rpd=5)},
        {},
        [
            ("acquire", "m", (), 600),
            ("release", 0, OK, None, 200),
            ("acquire", "m", (), 700),
            ("release", 1, OK, None, 700),
            ("acquire", "m", (), 200),
            ("acquire", "m", (), 50),
            ("release", 2, OK, None, 10),
            ("acquire", "m", (), 5000),
            ("ready_in",),
            ("advance", 61),
            ("acquire", "m", (), 10),
            ("release", 3, OK),
            ("acquire", "m", (), 10),
            ("ready_in",),
        ],
    ),
    "a cancelled lease frees the key and the probe": (
        "balanced",
        1,
        {},
        {"cooldown_s": 5},
        [("acquire",), ("release", 0, COOL), ("advance", 6), ("acquire",), ("acquire",), ("cancel", 1), ("acquire",)],
    ),
    "a pool wider than one pick's window": (
        "balanced",
        20,
        {},
        {"cooldown_s": 30},
        [
            *[step for i in range(12) for step in (("acquire",), ("release", i, COOL))],
            *[("acquire",)] * 10,
            ("ready_in",),
            ("advance", 31),
            *[("acquire",)] * 4,
            ("reset", 3),
            ("acquire", "m", (4, 5, 6)),
        ],
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_the_same_scenario_gives_the_same_outcomes_on_both_pools(both, name):
    strategy, n, budgets, settings, steps = SCENARIOS[name]
    local, shared = await both(n, strategy, budgets, **settings)
    await run_both(local, shared, steps)
    assert any(isinstance(entry[2], tuple) for entry in local.trace)  # the scenario leased something


VERDICTS = [OK, OK, OK, COOL, COOL_30, DAY, QUOTA, AUTH, BUSY_UPSTREAM, TIMEOUT]
HEADROOMS = [None, None, window(5), window(1), window(0), window(9, 3.0), Headroom(remaining_requests=2)]


def random_steps(rng: random.Random, n: int, count: int, open_of) -> Any:
    """A generator of random steps; `open_of()` tells which leases are open (the runs agree on it)."""
    for _ in range(count):
        roll = rng.random()
        open_now = open_of()
        if open_now and roll < 0.4:
            lease = rng.choice(open_now)
            if rng.random() < 0.1:
                yield ("cancel", lease)
            else:
                used = rng.choice([None, 50, 300, 1200])
                yield ("release", lease, rng.choice(VERDICTS), rng.choice(HEADROOMS), used)
        elif roll < 0.75:
            exclude = tuple(rng.sample(range(n), rng.choice([0, 0, 0, 1, 2])))
            yield ("acquire", rng.choice(["m", "m", "n"]), exclude, rng.choice([0, 0, 100, 400, 900]))
        elif roll < 0.9:
            yield ("advance", rng.choice([0.0, 0.25, 1.0, 7.5, 31.0, 61.0, 700.0, 4000.0]))
        elif roll < 0.96:
            yield ("ready_in", rng.choice(["m", "n"]))
        else:
            yield ("reset", rng.randrange(n))


@pytest.mark.parametrize(
    ("seed", "strategy", "n", "budgets"),
    [
        (1, "balanced", 3, {}),
        (2, "balanced", 11, {0: Budget(rpm=4), 3: Budget(tpm=1500), 5: Budget(rpm=2, tpd=3000)}),
        (3, "priority", 5, {1: Budget(rpm=3)}),
        (4, "round_robin", 6, {}),
        (5, "round_robin", 10, {2: Budget(rpm=2, tpm=800)}),
        (6, "priority", 12, {i: Budget(rpm=3, tpm=2000) for i in range(12)}),
    ],
)
async def test_random_runs_give_the_same_outcomes_on_both_pools(both, seed, strategy, n, budgets):
    local, shared = await both(n, strategy, budgets, cooldown_s=20, max_cooldown_s=300)
    rng = random.Random(seed)
    for step in random_steps(rng, n, 400, local.open_leases):
        await run_both_step(local, shared, step)
    for lease in local.open_leases():
        await run_both_step(local, shared, ("release", lease, OK, None, None))
    await finish(local, shared)
    leased = [entry for entry in local.trace if isinstance(entry[2], tuple)]
    assert len(leased) > 40 and {entry[2][2] for entry in leased} == {False, True}  # leases and probes both seen


async def run_both_step(local: Run, shared: Run, step: tuple) -> None:
    op, *args = step
    await local.step(op, *args)
    await shared.step(op, *args)
    assert shared.trace[-1] == local.trace[-1], f"step {len(local.trace) - 1}: {step}"
