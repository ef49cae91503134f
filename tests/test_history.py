"""The status page's history: the in-memory and the Redis store keep the same minutes and state
changes (bounded, deduplicated across instances), and a restricted token's pictures show only
what its policy reaches and its own usage."""

from __future__ import annotations

import re
from collections import Counter

import httpx2
import pytest

from mcp_keygate.history import MAX_CHANGES, MemoryHistory, RedisHistory

from .redis_support import unique_prefix
from .servers import ALICE, BOB, ServerProcess, free_port, streamable
from .test_presets_policies import preset_config

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        yield MemoryHistory()
        return
    from redis.asyncio import Redis

    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisHistory(redis, unique_prefix())
    await redis.aclose()


async def test_minutes_add_up_and_state_changes_are_kept_once(store):
    import time

    minute = int(time.time() // 60)
    await store.add_counts(Counter({(minute, "mini", "attempts"): 3, (minute, "mini", "rate_limited"): 1}))
    await store.add_counts(Counter({(minute, "mini", "attempts"): 2, (minute - 1, "big", "fallbacks"): 1}))
    minutes = await store.minutes(minute - 5)
    assert minutes[minute]["mini"] == {"attempts": 5, "rate_limited": 1}
    assert minutes[minute - 1]["big"] == {"fallbacks": 1}
    assert await store.minutes(minute + 1) == {}

    # Two instances sampling the same state record the change once.
    for at, state in [(1.0, "ready"), (2.0, "ready"), (3.0, "cooling"), (4.0, "cooling"), (5.0, "ready")]:
        await store.note_state("p:aaaa", state, f"why {state}", at)
    changes = await store.changes(["p:aaaa", "p:never"])
    assert [(at, state) for at, state, _ in changes["p:aaaa"]] == [(1.0, "ready"), (3.0, "cooling"), (5.0, "ready")]
    assert "p:never" not in changes

    for i in range(MAX_CHANGES + 50):
        await store.note_state("p:busy", "cooling" if i % 2 else "ready", "", float(i))
    assert len((await store.changes(["p:busy"]))["p:busy"]) == MAX_CHANGES


async def test_a_restricted_token_sees_only_its_part_of_the_pictures(sim, tmp_path):
    policy = '[policies.team-cheap]\ntokens = ["alice"]\nroutes = ["cheap"]\n'
    tokens = '[server]\nauth_tokens = { alice = "${ALICE_TOKEN}", bob = "${BOB_TOKEN}" }'
    config = tmp_path / "keygate.toml"
    config.write_text(preset_config(sim, f'[state]\npath = "{tmp_path / "s.db"}"\n{tokens}', policy), encoding="utf-8")
    server = ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}).wait_ready()
    try:
        async with streamable(server.url, BOB) as bob, streamable(server.url, ALICE) as alice:
            assert not (await bob.call_tool("complete", {"prompt": "bob's", "model": "default"})).is_error
            assert not (await alice.call_tool("complete", {"prompt": "alice's", "model": "cheap"})).is_error
        page = httpx2.get(f"{server.url}/status?fragment=1", headers={"authorization": f"Bearer {ALICE}"}).text
        bob_page = httpx2.get(f"{server.url}/status?fragment=1", headers={"authorization": f"Bearer {BOB}"}).text
    finally:
        server.stop()
    svgs = "".join(re.findall(r"<svg.*?</svg>", page, re.S))
    assert "mini" in svgs
    for other in ("gpt", "sonnet", "openai:", "claude:"):
        assert other not in svgs, other
    assert 'data-model="sonnet"' in bob_page and 'data-model="mini"' in bob_page  # an operator sees everyone's
