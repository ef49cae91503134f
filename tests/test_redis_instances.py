"""Several instances, one real redis-server: what one instance learns about a key, every instance
knows at once; conversations move between instances; no key's window is double-booked."""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest

from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.router import RouteFailed

from .conftest import fp, keys_used, sim_log, two_provider_config, write_toml
from .redis_support import unique_prefix
from .servers import ServerProcess, free_port, streamable
from .test_cli import run_cli

pytestmark = pytest.mark.anyio

RATE, GOOD, BACKUP = "sim-ratelimit-redis0001", "sim-ok-redis00000002", "sim-ok-redis0backup3"


def redis_config(tmp_path, sim, redis_url: str, primary: list[str], backup: list[str], **provider) -> dict:
    data = two_provider_config(sim, primary, backup)
    data["state"] = {"backend": "redis", "url": redis_url, "prefix": unique_prefix()}
    data["providers"]["primary"].update(provider)
    return data


@pytest.fixture
def two_instances(tmp_path, sim, redis_url):
    started: list[ServerProcess] = []

    def start(data: dict) -> tuple[ServerProcess, ServerProcess]:
        config = write_toml(tmp_path / "keygate.toml", data)
        for _ in range(2):
            started.append(ServerProcess(config, free_port(), {}, transport="streamable-http"))
        return started[0].wait_ready(), started[1].wait_ready()

    yield start
    for process in started:
        process.stop()


async def test_a_key_cooled_by_one_instance_is_never_used_by_another(sim, tmp_path, redis_url, two_instances):
    a, b = two_instances(redis_config(tmp_path, sim, redis_url, [RATE, GOOD], [BACKUP], strategy="priority"))
    async with streamable(a.url, None) as session:
        first = await session.call_tool("complete", {"prompt": "on A"})
        assert [x["outcome"] for x in first.structured_content["attempts"]] == ["rate_limited", "ok"]
    async with streamable(b.url, None) as session:
        rows = (await session.call_tool("key_status", {"provider": "primary"})).structured_content["keys"]
        assert [r["state"] for r in rows] == ["cooling", "ready"] and rows[0]["ready_in_s"] > 25
        for i in range(5):
            result = await session.call_tool("complete", {"prompt": f"on B {i}"})
            assert [x["outcome"] for x in result.structured_content["attempts"]] == ["ok"]
    assert keys_used(sim).count(fp(RATE)) == 1
    status = run_cli("status", "--config", str(tmp_path / "keygate.toml"), "--json")
    assert status.returncode == 0, status.stderr
    states = {r["key_id"]: r["state"] for r in json.loads(status.stdout)["keys"]}
    assert sorted(states.values()) == ["cooling", "ready", "ready"]


async def test_a_conversation_started_on_one_instance_continues_on_another(sim, tmp_path, redis_url, two_instances):
    a, b = two_instances(redis_config(tmp_path, sim, redis_url, [GOOD], [BACKUP]))
    async with streamable(a.url, None) as session:
        first = await session.call_tool("complete", {"prompt": "remember: heron", "system": "be brief"})
        cid = first.structured_content["conversation_id"]
    async with streamable(b.url, None) as session:
        second = await session.call_tool("complete", {"prompt": "which bird?", "conversation_id": cid})
    assert not second.is_error, second.content
    assert [m["content"] for m in sim_log(sim)[-1]["messages"]] == [
        "be brief",
        "remember: heron",
        first.structured_content["text"],
        "which bird?",
    ]


async def test_two_instances_never_double_book_a_window(sim, tmp_path, redis_url, two_instances):
    keys = ["sim-ok-window-key-01", "sim-ok-window-key-02"]
    httpx2.post(f"{sim.url}/_sim/reset", json={"keys": {k: {"rpm": 10} for k in keys}}).raise_for_status()
    data = redis_config(tmp_path, sim, redis_url, keys, [])
    data["routes"] = {"default": ["mini"]}
    a, b = two_instances(data)
    results: list[dict] = []

    async def caller(url: str, i: int) -> None:
        async with streamable(url, None) as session:
            result = await session.call_tool("complete", {"prompt": f"call {i}", "max_wait_s": 0})
            results.append({"error": result.is_error, "text": result.content[0].text})

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(caller, a.url, i)
                tg.start_soon(caller, b.url, 100 + i)
    log = sim_log(sim)
    per_key_429 = {k: sum(1 for e in log if e["key"] == fp(k) and e["status"] == 429) for k in keys}
    assert all(n <= 1 for n in per_key_429.values()), per_key_429
    answered = [r for r in results if not r["error"]]
    assert len(answered) == 20  # exactly the two windows' capacity
    refused = [r for r in results if r["error"]]
    assert len(refused) == 20 and all("ready again in" in r["text"] for r in refused)


async def test_in_process_gateways_share_cooldowns_instantly(sim, redis_url):
    """Two gateways in one process stand in for two instances: the second sees the first's 429."""
    data = two_provider_config(sim, [RATE, GOOD], [])
    data["state"] = {"backend": "redis", "url": redis_url, "prefix": unique_prefix()}
    data["providers"]["primary"]["strategy"] = "priority"
    data["routes"] = {"default": ["mini"]}
    config = parse_config(data)
    async with Keygate(config) as one, Keygate(config) as two:
        await one.complete(CompleteRequest(prompt="first"))
        rows = (await two.views.key_status("primary")).keys
        assert [r.state for r in rows] == ["cooling", "ready"]
        result = await two.complete(CompleteRequest(prompt="second"))
        assert [a.key_id for a in result.attempts] == [one.keys["primary"][1].key_id]
        await one.pool.reset(one.keys["primary"][0].key_id)  # an operator reset on one instance…
        assert [r.state for r in (await two.views.key_status("primary")).keys] == ["ready", "ready"]  # …seen by all
        with pytest.raises(RouteFailed):
            await two.complete(CompleteRequest(prompt="third", model="big", max_wait_s=0))  # no backup keys at all
