"""One conversation across OpenAI, Anthropic and Gemini, each provider's failure signals through the
real HTTP path, streams cut midway, and context fitting — against the simulator on loopback."""

from __future__ import annotations

import anyio
import httpx2
import pytest

from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.router import RouteFailed

from .conftest import fp, sim_log

pytestmark = pytest.mark.anyio

UPSTREAM = {"openai": "gpt-4.1-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}


def three_providers(sim, keys: dict[str, list[str]], **extra) -> dict:
    bases = {"openai": sim.openai_base, "anthropic": sim.url, "gemini": sim.url}
    data = {
        "state": {"backend": "memory"},
        "providers": {p: {"type": p, "base_url": bases[p], "keys": keys.get(p, [])} for p in bases},
        "models": {
            "gpt": {"provider": "openai", "model": UPSTREAM["openai"]},
            "claude": {"provider": "anthropic", "model": UPSTREAM["anthropic"], "max_output_tokens": 512},
            "gemini": {"provider": "gemini", "model": UPSTREAM["gemini"]},
        },
        "routes": {"default": ["gpt", "claude", "gemini"]},
    }
    data.update(extra)
    return data


def scenario(sim, data: dict) -> None:
    httpx2.post(f"{sim.url}/_sim/reset", json=data).raise_for_status()


async def test_one_conversation_across_three_providers(sim):
    gpt_key, claude_key, gemini_key = "sim-ok-x-gpt00001", "sim-ok-x-claude001", "sim-ok-x-gemini001"
    scenario(sim, {"keys": {gpt_key: {"rpm": 1}, claude_key: {"after": 1, "then": "quota"}}})
    config = parse_config(
        three_providers(sim, {"openai": [gpt_key], "anthropic": [claude_key], "gemini": [gemini_key]})
    )
    system = "You are a terse assistant."
    async with Keygate(config) as gate:
        one = await gate.complete(CompleteRequest(prompt="Turn one?", system=system))
        two = await gate.complete(CompleteRequest(prompt="Turn two?", conversation_id=one.conversation_id))
        three = await gate.complete(CompleteRequest(prompt="Turn three?", conversation_id=one.conversation_id))
        states = {row.key_id: row for row in (await gate.views.key_status()).keys}
    assert (one.provider, two.provider, three.provider) == ("openai", "anthropic", "gemini")
    # The gpt key's headers said "0 requests left": it cools before any 429, so turn 2 goes straight on.
    assert [(a.model, a.outcome) for a in two.attempts] == [("claude", "ok")]
    assert [a.outcome for a in three.attempts] == ["quota_exhausted", "ok"]  # gpt is still cooling: not retried
    assert states[gate.keys["openai"][0].key_id].state == "cooling"
    assert "no requests left" in states[gate.keys["openai"][0].key_id].reason
    assert states[gate.keys["anthropic"][0].key_id].state == "exhausted"

    assert all(e["status"] != 429 for e in sim_log(sim))
    served = [e for e in sim_log(sim) if e["outcome"] == "ok"]
    openai_call, anthropic_call, gemini_call = served
    assert openai_call["messages"] == [{"role": "system", "content": system}, {"role": "user", "content": "Turn one?"}]
    # Anthropic: system prompt at the top level, user/assistant alternating from a user turn.
    assert anthropic_call["system"] == system and anthropic_call["key"] == fp(claude_key)
    assert anthropic_call["messages"] == [
        {"role": "user", "content": "Turn one?"},
        {"role": "assistant", "content": one.text},
        {"role": "user", "content": "Turn two?"},
    ]
    assert anthropic_call["max_tokens"] == 512  # always sent, from the model config
    # Gemini: systemInstruction, roles user/model, the whole history.
    assert gemini_call["system"] == {"parts": [{"text": system}]}
    assert gemini_call["messages"] == [
        {"role": "user", "parts": [{"text": "Turn one?"}]},
        {"role": "model", "parts": [{"text": one.text}]},
        {"role": "user", "parts": [{"text": "Turn two?"}]},
        {"role": "model", "parts": [{"text": two.text}]},
        {"role": "user", "parts": [{"text": "Turn three?"}]},
    ]
    assert "I received 5 message(s), system prompt: yes" in three.text


CASES = [
    # (api, magic behaviour, expected state, expected model scope, ready_in bounds)
    ("openai", "ratelimit", "cooling", True, (25, 30)),
    ("openai", "quota", "exhausted", False, (3600, None)),
    ("openai", "spendlimit", "exhausted", False, (3600, None)),
    ("openai", "invalid", "disabled", False, None),
    ("openai", "overloaded", "ready", False, None),
    ("anthropic", "ratelimit", "cooling", True, (25, 30)),
    ("anthropic", "quota", "exhausted", False, (3600, None)),  # "credit balance is too low" (400)
    ("anthropic", "spendlimit", "exhausted", False, (3600, None)),  # enforced_spend_limit_reached
    ("anthropic", "invalid", "disabled", False, None),
    ("anthropic", "overloaded", "ready", False, None),  # 529: the model is skipped, the key is fine
    ("gemini", "ratelimit", "cooling", True, (25, 30)),  # PerMinute: the RetryInfo delay
    ("gemini", "quota", "exhausted", False, (60, None)),  # PerDay despite retryDelay 26s
    ("gemini", "spendlimit", "exhausted", False, (3600, None)),
    ("gemini", "invalid", "disabled", False, None),
    ("gemini", "overloaded", "ready", False, None),
]


@pytest.mark.parametrize(("api", "behavior", "state", "scoped", "ready_in"), CASES)
async def test_each_failure_signal_lands_the_key_in_the_right_state(sim, api, behavior, state, scoped, ready_in):
    key = f"sim-{behavior}-{api}-case01"
    data = three_providers(sim, {api: [key]})
    name = {"openai": "gpt", "anthropic": "claude", "gemini": "gemini"}[api]
    data["routes"] = {"default": [name]}
    async with Keygate(parse_config(data)) as gate:
        with pytest.raises(RouteFailed):
            await gate.complete(CompleteRequest(prompt="hi", max_wait_s=0))
        (row,) = (await gate.views.key_status(api)).keys
        again = len(sim_log(sim))
        with pytest.raises(RouteFailed):
            await gate.complete(CompleteRequest(prompt="hi", max_wait_s=0))
    assert row.state == state, row.reason
    assert (row.model == UPSTREAM[api]) if scoped else row.model is None
    if ready_in is not None:
        low, high = ready_in
        assert row.ready_in_s >= low and (high is None or row.ready_in_s <= high)
    if state != "ready":
        assert len(sim_log(sim)) == again  # a key known to be unusable is never called again
    for secret_piece in (key, key[4:16]):
        assert secret_piece not in (row.reason or "")


@pytest.mark.parametrize(("api", "cut"), [(a, c) for a in UPSTREAM for c in ("streamcut", "streamerror")])
async def test_a_broken_stream_is_never_returned_and_the_call_moves_on(sim, api, cut):
    broken, good = f"sim-{cut}-{api}-0001", f"sim-ok-{api}-after-cut"
    data = three_providers(sim, {api: [broken, good]})
    name = {"openai": "gpt", "anthropic": "claude", "gemini": "gemini"}[api]
    data["routes"] = {"default": [name]}
    data["providers"][api]["strategy"] = "priority"
    async with Keygate(parse_config(data)) as gate:
        result = await gate.complete(CompleteRequest(prompt="Please answer in full.", system="s"))
        (row_broken, _row_good) = (await gate.views.key_status(api)).keys
    first = result.attempts[0]
    assert first.outcome in ("upstream_error", "overloaded") and first.key_id == gate.keys[api][0].key_id
    assert result.attempts[-1].outcome == "ok" and result.key_id == gate.keys[api][1].key_id
    assert (
        result.text
        == f'[{UPSTREAM[api]}] I received 1 message(s), system prompt: yes. You said: "Please answer in full."'
    )
    assert row_broken.state == "ready"  # a broken stream is not the key's fault
    assert all(e["stream"] for e in sim_log(sim))


async def test_a_plain_reply_cut_in_half_is_an_upstream_error(sim):
    data = three_providers(sim, {"openai": ["sim-streamcut-plain01", "sim-ok-plain000002"]})
    data["providers"]["openai"].update(stream=False, strategy="priority")
    data["routes"] = {"default": ["gpt"]}
    async with Keygate(parse_config(data)) as gate:
        result = await gate.complete(CompleteRequest(prompt="hi"))
    assert [a.outcome for a in result.attempts] == ["upstream_error", "ok"]


async def test_long_conversation_is_trimmed_to_the_window_and_says_so(sim):
    data = three_providers(sim, {"anthropic": ["sim-ok-trim0000001"]})
    data["models"]["claude"].update(context_window=300, max_output_tokens=50)
    data["routes"] = {"default": ["claude"]}
    async with Keygate(parse_config(data)) as gate:
        result = await gate.complete(CompleteRequest(prompt="start " + "a" * 200, system="keep me"))
        cid = result.conversation_id
        for i in range(6):
            result = await gate.complete(CompleteRequest(prompt=f"turn {i} " + "b" * 200, conversation_id=cid))
        turns = await gate.store.get_turns(cid)
    assert result.trimmed_turns > 0
    last = sim_log(sim)[-1]
    assert last["system"] == "keep me"
    assert last["messages"][-1]["content"].startswith("turn 5")
    assert len(last["messages"]) < len(turns) - 1  # fewer sent than stored
    assert len(turns) == 1 + 7 * 2  # nothing is deleted from the stored conversation


@pytest.mark.parametrize("api", ["anthropic", "gemini"])
async def test_an_upstream_overflow_moves_to_a_model_with_a_larger_window(sim, api):
    scenario(sim, {"models": {UPSTREAM[api]: {"context_window": 30}}})
    data = three_providers(sim, {api: ["sim-ok-small-window"], "openai": ["sim-ok-large-window"]})
    name = {"anthropic": "claude", "gemini": "gemini"}[api]
    data["models"][name]["context_window"] = 10_000  # the config is wrong: only the upstream knows
    data["models"]["gpt"]["context_window"] = 1_000_000
    data["routes"] = {"default": [name, "gpt"]}
    async with Keygate(parse_config(data)) as gate:
        result = await gate.complete(CompleteRequest(prompt="word " * 100))
    assert [a.outcome for a in result.attempts] == ["context_too_long", "ok"] and result.model == "gpt"


async def test_streaming_sends_progress_as_tokens_arrive(sim):
    scenario(sim, {"defaults": {"reply_words": 600}})
    data = three_providers(sim, {"gemini": ["sim-ok-progress001"]})
    data["routes"] = {"default": ["gemini"]}
    notes: list[str] = []

    async def notify(message: str, level: str = "info") -> None:
        notes.append(message)

    async with Keygate(parse_config(data)) as gate:
        with anyio.fail_after(10):
            result = await gate.complete(CompleteRequest(prompt="a long answer, please"), notify=notify)
    assert len(result.text.split(" ")) == 600
    assert sum("tokens received" in n for n in notes) >= 3
