"""The router and gateway in-process, against the simulator over real HTTP on loopback."""

from __future__ import annotations

import anyio
import httpx2
import pytest

from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.conversations import UnknownConversation
from mcp_keygate.errors import InvalidRequest
from mcp_keygate.gateway import Keygate
from mcp_keygate.keys.pool import Lease
from mcp_keygate.outcomes import Outcome, Verdict
from mcp_keygate.router import RequestRejected, RouteFailed
from mcp_keygate.schemas import InputMessage

from .conftest import fp, keys_used, sim_log, two_provider_config

pytestmark = pytest.mark.anyio


def set_scenario(sim, scenario: dict) -> None:
    httpx2.post(f"{sim.url}/_sim/reset", json=scenario).raise_for_status()


async def test_rotation_skips_bad_keys_and_never_reuses_them(sim, make_config):
    keys = ["sim-ratelimit-aaaaaaaa01", "sim-quota-bbbbbbbb02", "sim-ok-cccccccc03"]
    config = make_config(two_provider_config(sim, keys, ["sim-ok-dddddddd04"]))
    async with Keygate(config) as gate:
        first = await gate.complete(CompleteRequest(prompt="hello"))
        assert first.key_id == gate.keys["primary"][2].key_id
        assert [a.outcome for a in first.attempts] == ["rate_limited", "quota_exhausted", "ok"]
        assert first.attempts[0].retry_after_s == 30
        for _ in range(5):
            result = await gate.complete(CompleteRequest(prompt="again", conversation_id=first.conversation_id))
            assert [a.outcome for a in result.attempts] == ["ok"]
    used = keys_used(sim)
    assert used.count(fp(keys[0])) == 1 and used.count(fp(keys[1])) == 1
    assert used.count(fp(keys[2])) == 6


async def test_fallback_sends_the_whole_conversation_in_order(sim, make_config):
    primary, backup = "sim-ok-primary000001", "sim-ok-backup0000001"
    set_scenario(sim, {"keys": {primary: {"rpm": 1}}})
    config = make_config(two_provider_config(sim, [primary], [backup]))
    async with Keygate(config) as gate:
        first = await gate.complete(CompleteRequest(prompt="first question", system="You are terse."))
        assert first.model == "mini"
        second = await gate.complete(CompleteRequest(prompt="second question", conversation_id=first.conversation_id))
    assert second.model == "big" and second.provider == "backup"
    assert [a.outcome for a in second.attempts] == ["ok"]  # steered away on "0 left", before any 429
    last = sim_log(sim)[-1]
    assert last["key"] == fp(backup) and last["model"] == "gpt-4.1"
    assert last["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "second question"},
    ]
    assert "received 3 message(s), system prompt: yes" in second.text


async def test_stored_turns_record_who_answered(sim, make_config):
    primary, backup = "sim-ok-primary000002", "sim-ok-backup0000002"
    set_scenario(sim, {"keys": {primary: {"rpm": 1}}})
    async with Keygate(make_config(two_provider_config(sim, [primary], [backup]))) as gate:
        first = await gate.complete(CompleteRequest(prompt="one"))
        await gate.complete(CompleteRequest(prompt="two", conversation_id=first.conversation_id))
        turns = await gate.store.get_turns(first.conversation_id)
    assert [(t.role, t.model) for t in turns] == [
        ("user", None),
        ("assistant", "mini"),
        ("user", None),
        ("assistant", "big"),
    ]
    assert turns[1].key_id == first.key_id and turns[3].provider == "backup"


async def test_context_overflow_moves_to_a_larger_model(sim, make_config):
    set_scenario(sim, {"models": {"gpt-4.1-mini": {"context_window": 40}}})
    data = two_provider_config(sim, ["sim-ok-small0000001"], ["sim-ok-large0000001"])
    data["models"]["mini"]["context_window"] = 40
    data["models"]["big"]["context_window"] = 100_000
    async with Keygate(make_config(data)) as gate:
        result = await gate.complete(CompleteRequest(prompt="word " * 400))
        status = (await gate.views.key_status("primary")).keys[0]
    assert result.model == "big"
    assert [a.outcome for a in result.attempts] == ["context_too_long", "ok"]
    assert status.state == "ready"  # the request was too long, the key is fine


async def test_a_bad_request_is_returned_without_trying_other_keys(sim, make_config):
    config = make_config(two_provider_config(sim, ["sim-ok-req00000001", "sim-ok-req00000002"], ["sim-ok-req00000003"]))
    async with Keygate(config) as gate:
        with pytest.raises(RequestRejected, match="temperature"):
            await gate.complete(CompleteRequest(prompt="hi", temperature=7))
        assert all(row.state == "ready" for row in (await gate.views.key_status()).keys)
    assert len(sim_log(sim)) == 1


async def test_overload_retries_once_on_another_key_then_falls_back(sim, make_config):
    primary = ["sim-overloaded-ov000001", "sim-overloaded-ov000002", "sim-overloaded-ov000003"]
    config = make_config(two_provider_config(sim, primary, ["sim-ok-ov00000004"]))
    async with Keygate(config) as gate:
        result = await gate.complete(CompleteRequest(prompt="hi"))
        assert [a.outcome for a in result.attempts] == ["overloaded", "overloaded", "ok"]
        assert result.model == "big"
        assert all(
            row.state == "ready" for row in (await gate.views.key_status("primary")).keys
        )  # overload is not the key's fault
        again = await gate.complete(CompleteRequest(prompt="hi again"))
        assert [a.model for a in again.attempts] == ["big"]  # the overloaded model is skipped for a while


async def test_waits_for_a_key_that_is_ready_soon_with_progress(sim, make_config):
    config = make_config(two_provider_config(sim, ["sim-ok-wait0000001"], []))
    config.routes["default"] = ["mini"]
    async with Keygate(config) as gate:
        key = gate.keys["primary"][0]
        held = await gate.pool.acquire("primary", "gpt-4.1-mini")
        assert isinstance(held, Lease) and held.key == key
        await gate.pool.release(held, Verdict(Outcome.RATE_LIMITED, 429, 0.5, "429"))
        notes: list[str] = []

        async def notify(message: str, level: str = "info") -> None:
            notes.append(message)

        with anyio.fail_after(5):
            result = await gate.complete(CompleteRequest(prompt="hi", max_wait_s=3), notify=notify)
    assert result.key_id == key.key_id
    assert any("waiting" in n for n in notes)


async def test_fails_with_when_to_retry_when_the_wait_is_too_long(sim, make_config):
    config = make_config(two_provider_config(sim, ["sim-ratelimit-long00001"], ["sim-quota-long000002"]))
    async with Keygate(config) as gate:
        with pytest.raises(RouteFailed) as info:
            await gate.complete(CompleteRequest(prompt="hi", max_wait_s=1))
        message = str(info.value)
        assert "ready again in 30 s" in message
        assert "rate_limited" in message and "quota_exhausted" in message
        with pytest.raises(RouteFailed) as info:
            await gate.complete(CompleteRequest(prompt="hi", max_wait_s=0))
    assert len(sim_log(sim)) == 2  # the second call sent nothing: every key was known unusable
    assert "mini: 1 cooling of 1 keys" in str(info.value)


async def test_all_keys_disabled_says_no_key_will_recover(sim, make_config):
    config = make_config(two_provider_config(sim, ["sim-invalid-dis000001"], ["sim-invalid-dis000002"]))
    async with Keygate(config) as gate:
        with pytest.raises(RouteFailed, match="No key will become usable by itself"):
            await gate.complete(CompleteRequest(prompt="hi"))
        assert {row.state for row in (await gate.views.key_status()).keys} == {"disabled"}


async def test_bad_input_is_rejected_before_anything_is_sent_or_stored(sim, make_config):
    config = make_config(two_provider_config(sim, ["sim-ok-input000001"], []))
    async with Keygate(config) as gate:
        with pytest.raises(InvalidRequest, match="exactly one"):
            await gate.complete(CompleteRequest())
        with pytest.raises(InvalidRequest, match="exactly one"):
            await gate.complete(CompleteRequest(prompt="a", messages=[InputMessage(role="user", content="b")]))
        with pytest.raises(InvalidRequest, match="unknown model or route 'nope'; known: big, default, mini"):
            await gate.complete(CompleteRequest(prompt="a", model="nope"))
        with pytest.raises(UnknownConversation, match="does not exist"):
            await gate.complete(CompleteRequest(prompt="a", conversation_id="c_doesnotexist"))
        with pytest.raises(InvalidRequest, match="conversation_id must be"):
            await gate.complete(CompleteRequest(prompt="a", conversation_id="../../etc/passwd"))
        with pytest.raises(InvalidRequest, match="role 'user'"):
            await gate.complete(CompleteRequest(messages=[InputMessage(role="system", content="only system")]))
        assert await gate.store.list_conversations() == []
        assert all(row.requests == 0 for row in (await gate.views.key_status()).keys)
    assert sim_log(sim) == []


async def test_messages_input_and_max_tokens(sim, make_config):
    config = make_config(two_provider_config(sim, ["sim-ok-msgs0000001"], []))
    async with Keygate(config) as gate:
        result = await gate.complete(
            CompleteRequest(
                messages=[
                    InputMessage(role="user", content="Name a colour."),
                    InputMessage(role="assistant", content="Blue."),
                    InputMessage(role="user", content="Another?"),
                ],
                max_tokens=3,
            )
        )
    assert result.finish_reason == "length"
    assert sim_log(sim)[0]["max_tokens"] == 3
    assert len(sim_log(sim)[0]["messages"]) == 3


async def test_concurrent_calls_spread_over_keys(sim, make_config):
    keys = [f"sim-ok-spread00000{i}" for i in range(4)]
    set_scenario(sim, {"defaults": {"latency_ms": 50}})
    async with Keygate(make_config(two_provider_config(sim, keys, []))) as gate:
        results = []

        async def one() -> None:
            results.append(await gate.complete(CompleteRequest(prompt="hi")))

        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(one)
    assert len(results) == 12
    counts = [keys_used(sim).count(fp(k)) for k in keys]
    assert sum(counts) == 12 and min(counts) >= 2  # spread over every key, none piled on


async def test_size_limits_are_clear_errors(sim, make_config):
    data = two_provider_config(sim, ["sim-ok-limits00001"], [])
    data["limits"] = {"max_prompt_chars": 100, "max_messages": 3, "max_conversation_turns": 4}
    async with Keygate(make_config(data)) as gate:
        with pytest.raises(InvalidRequest, match=r"101 characters, the limit is 100 \(\[limits\] max_prompt_chars\)"):
            await gate.complete(CompleteRequest(prompt="x" * 101))
        with pytest.raises(InvalidRequest, match="4 messages, the limit is 3"):
            await gate.complete(CompleteRequest(messages=[InputMessage(role="user", content="m")] * 4))
        first = await gate.complete(CompleteRequest(prompt="one"))
        await gate.complete(CompleteRequest(prompt="two", conversation_id=first.conversation_id))
        with pytest.raises(InvalidRequest, match=r"the limit is 4 .* start a new one"):
            await gate.complete(CompleteRequest(prompt="three", conversation_id=first.conversation_id))
    assert len(sim_log(sim)) == 2


async def test_budgets_keep_a_silent_provider_free_of_429s_under_concurrency(sim, make_config):
    """Gemini sends no rate-limit headers, so only the configured budget can keep its keys clear."""
    keys = [f"sim-ok-budget0000{i}" for i in range(3)]
    set_scenario(sim, {"keys": {k: {"rpm": 4} for k in keys}})
    config = make_config(
        {
            "state": {"backend": "memory"},
            "providers": {"g": {"type": "gemini", "base_url": sim.url, "keys": keys, "rpm": 4}},
            "models": {"flash": {"provider": "g", "model": "gemini-2.5-flash"}},
        }
    )
    answered, refused = [], []
    async with Keygate(config) as gate:

        async def one(i: int) -> None:
            try:
                answered.append(await gate.complete(CompleteRequest(prompt=f"call {i}", max_wait_s=0)))
            except RouteFailed as error:
                refused.append(str(error))

        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(one, i)
    statuses = [entry["status"] for entry in sim_log(sim)]
    assert statuses.count(429) == 0
    assert len(answered) == 12 == statuses.count(200)  # 3 keys × 4 rpm, every one of them used
    assert len(refused) == 18 and all(
        "3 cooling on their client-side budget of 3 keys" in message for message in refused
    )


async def test_a_call_that_waits_says_so_every_few_seconds(sim, make_config, monkeypatch):
    """Clients give up on silence (60 s by default, reset by progress): a call waiting for a cooling
    key, or for a slow first byte, keeps telling them what it waits for."""
    from mcp_keygate import heartbeat

    monkeypatch.setattr(heartbeat, "HEARTBEAT_S", 1.0)
    httpx2.post(
        f"{sim.url}/_sim/reset",
        json={
            "keys": {
                "sim-ok-beat-cool1": {"behavior": "ratelimit", "retry_after_s": 3.5, "recover_after_s": 3.5},
                "sim-ok-beat-slow1": {"latency_ms": 3500},
            }
        },
    ).raise_for_status()
    said: list[str] = []

    async def notify(message: str, level: str = "info") -> None:
        said.append(message)

    for key, waiting in (
        ("sim-ok-beat-cool1", "still waiting for a cooling key"),
        ("sim-ok-beat-slow1", "no answer yet"),
    ):
        said.clear()
        async with Keygate(make_config(two_provider_config(sim, [key], []))) as gate:
            result = await gate.complete(CompleteRequest(prompt="hi", max_wait_s=10), notify=notify)
        assert result.text, key
        assert sum(waiting in message for message in said) >= 2, (key, said)
