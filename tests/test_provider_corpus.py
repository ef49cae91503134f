"""Every real provider error in the corpus, replayed by the simulator over real HTTP, through the router
and the pool: the key ends in the expected state, held for the expected time, and the call does what
the entry says comes next.

The route is model `a` (three keys of the entry's provider type, each answered with the entry) then
model `b` (a good key, a larger window). What happens next tells the classes apart:
  other_key              a, a, a, b   the key was to blame: each key is tried
  retry_then_next_model  a, a, b      one retry on another key, then the next model
  next_model             a, b         the next model at once
  error_to_caller        a            the request is wrong: the agent gets an error
"""

from __future__ import annotations

import datetime as dt
import json

import httpx2
import pytest

from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.keys.state import KeyState
from mcp_keygate.router import RequestRejected, RouteFailed
from mcp_keygate.simulator.corpus import CorpusEntry, expected_wait, load_corpus

pytestmark = pytest.mark.anyio

CORPUS = load_corpus()
WIRE_BASE = {"anthropic": "url", "gemini": "url", "azure": "url"}
UPSTREAM = {"anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}
TRIES_ON_A = {"other_key": 3, "retry_then_next_model": 2, "next_model": 1, "error_to_caller": 1}


def _keys(entry: CorpusEntry) -> list[str]:
    return [f"corpus-{entry.name}-{i}" for i in range(3)]


def _config(sim, entry: CorpusEntry) -> dict:
    return {
        "state": {"backend": "memory"},
        "providers": {
            "p": {
                "type": entry.provider,
                "base_url": getattr(sim, WIRE_BASE.get(entry.provider, "openai_base")),
                "keys": _keys(entry),
                "strategy": "priority",
                "stream": False,
            },
            "backup": {"type": "openai", "base_url": sim.openai_base, "keys": ["sim-ok-corpus-backup"]},
        },
        "models": {
            "a": {"provider": "p", "model": UPSTREAM.get(entry.provider, "gpt-4.1-mini"), "context_window": 8192},
            "b": {"provider": "backup", "model": "gpt-4.1", "context_window": 1_000_000},
        },
        "routes": {"default": ["a", "b"]},
    }


@pytest.mark.parametrize("name", sorted(CORPUS))
async def test_each_real_error_sets_the_key_state_and_what_the_call_does_next(sim, name):
    entry = CORPUS[name]
    scenario = {"keys": {key: {"replay": name} for key in _keys(entry)}}
    httpx2.post(f"{sim.url}/_sim/reset", content=json.dumps(scenario)).raise_for_status()
    expect = entry.expect
    async with Keygate(parse_config(_config(sim, entry))) as gate:
        request = CompleteRequest(prompt="Say hello.", max_wait_s=0)
        if expect.next == "error_to_caller":
            with pytest.raises(RequestRejected) as info:
                await gate.complete(request)
            attempts = info.value.attempts
        else:
            result = await gate.complete(request)
            attempts = result.attempts
            assert result.model == "b" and result.text.startswith("[gpt-4.1]"), result
        first = gate.keys["p"][0]
        record = next(r for r in await gate.pool.records("p") if r.key_id == first.key_id)
        settings = gate.config.providers["p"]

    tried_a = [a for a in attempts if a.model == "a"]
    assert [a.outcome for a in tried_a] == [expect.outcome] * TRIES_ON_A[expect.next], attempts
    assert tried_a[0].status_code == entry.status

    hold = record.hold or record.model_holds.get(UPSTREAM.get(entry.provider, "gpt-4.1-mini"))
    state = hold.state if hold is not None else KeyState.READY
    assert state.value == expect.key_state, (hold, attempts[0].reason)
    if hold is None:
        return
    held_for = (hold.until - hold.since) if hold.until is not None else None
    wanted = expected_wait(expect.wait, dt.datetime.fromtimestamp(hold.since, dt.UTC))
    if wanted is None and hold.state is not KeyState.DISABLED:
        wanted = settings.cooldown_s if hold.state is KeyState.COOLING else settings.quota_cooldown_s
    if hold.state is KeyState.DISABLED:
        assert held_for is None
    else:
        assert held_for is not None and abs(held_for - wanted) <= expect.tolerance_s, (held_for, wanted)


def test_the_corpus_covers_every_provider_and_the_issue_s_signals():
    by_provider: dict[str, int] = {}
    for entry in CORPUS.values():
        by_provider[entry.provider] = by_provider.get(entry.provider, 0) + 1
    assert len(CORPUS) >= 40
    assert set(by_provider) == {"openai", "azure", "anthropic", "gemini", "groq", "mistral", "deepseek", "openrouter"}
    statuses = {entry.status for entry in CORPUS.values()}
    assert {402, 404, 408, 413, 504} <= statuses
    outcomes = {entry.expect.outcome for entry in CORPUS.values()}
    assert {"model_not_found", "timeout", "context_too_long", "bad_request", "overloaded"} <= outcomes
    assert all(entry.source.startswith("https://") for entry in CORPUS.values())


async def test_an_unknown_model_with_nothing_behind_it_fails_at_once_naming_the_setting(sim):
    entry = CORPUS["openai-404-model-not-found"]
    httpx2.post(f"{sim.url}/_sim/reset", content=json.dumps({"keys": {"corpus-only": {"replay": entry.name}}}))
    data = _config(sim, entry)
    data["providers"]["p"]["keys"] = ["corpus-only"]
    data["routes"] = {"default": ["a"]}
    async with Keygate(parse_config(data)) as gate:
        with pytest.raises(RouteFailed) as info:
            await gate.complete(CompleteRequest(prompt="hi"))  # the default max_wait_s: no waiting here
    assert [a.outcome for a in info.value.attempts] == ["model_not_found"]
    assert "models.a.model = 'gpt-4.1-mini': the provider does not know this model" in str(info.value)
    assert info.value.ready_in_s is None
