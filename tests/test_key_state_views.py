"""Four views of key state — key_status, /metrics, list_models and a failed call's summary — must
say the same thing about every key, whatever holds it: a rate limit for one model or another, a
spent quota, a rejected key, a spent client-side budget, an expired hold, or several at once."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter

import pytest

from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.keys.budget import charge
from mcp_keygate.keys.state import Hold, KeyRecord, KeyState
from mcp_keygate.metrics import Metrics
from mcp_keygate.route_report import model_summary

pytestmark = pytest.mark.anyio

NOW = time.time()
MODELS = {"fast": "up-fast", "slow": "up-slow"}


def hold(state: KeyState, seconds: float | None = 60.0) -> Hold:
    return Hold(state, None if seconds is None else NOW + seconds, f"{state.value} for the test", 429, NOW)


# Each scenario changes a key's record; every combination of two of them is tried on one key.
SCENARIOS = {
    "fresh": lambda r: None,
    "cooling fast": lambda r: r.model_holds.__setitem__("up-fast", hold(KeyState.COOLING)),
    "cooling slow": lambda r: r.model_holds.__setitem__("up-slow", hold(KeyState.COOLING, 5)),
    "expired cooling": lambda r: r.model_holds.__setitem__("up-fast", hold(KeyState.COOLING, -5)),
    "exhausted": lambda r: setattr(r, "hold", hold(KeyState.EXHAUSTED, 3600)),
    "disabled": lambda r: setattr(r, "hold", hold(KeyState.DISABLED, None)),
    "budget spent": lambda r: charge(r.spend, r.budget, NOW, 1, 0),
}
COMBOS = list(itertools.combinations_with_replacement(SCENARIOS, 2))


def config_for(n: int):
    keys = [{"key": f"${{KEY_{i}}}", "rpm": 1} for i in range(n)]
    return parse_config(
        {
            "state": {"backend": "memory"},
            "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "keys": keys}},
            "models": {name: {"provider": "p", "model": upstream} for name, upstream in MODELS.items()},
        }
    )


def per_model(rows, key_id: str, upstream: str) -> str:
    """A key's state for one model, read off the key_status rows."""
    mine = [r for r in rows if r.key_id == key_id]
    whole = [r for r in mine if r.model is None and r.state != "ready"]
    if whole:
        return whole[0].state
    return next((r.state for r in mine if r.model == upstream), "ready")


def key_wide(rows, key_id: str) -> str:
    """A key's state as a whole (what /metrics counts), read off the key_status rows."""
    mine = [r for r in rows if r.key_id == key_id]
    whole = [r for r in mine if r.model is None]
    return whole[0].state if whole else "cooling"


async def test_key_status_metrics_list_models_and_summaries_agree(monkeypatch):
    env = {f"KEY_{i}": f"sk-views-{i:04d}-0123456789abcdef" for i in range(len(COMBOS))}
    gate = Keygate(config_for(len(COMBOS)), env=env, clock=lambda: NOW)
    async with gate:
        records: list[KeyRecord] = await gate.pool.records("p")
        for record, combo in zip(records, COMBOS, strict=True):
            for scenario in combo:
                SCENARIOS[scenario](record)
        rows = (await gate.views.key_status()).keys
        ids = [r.key_id for r in records]

        metrics = (await Metrics(gate.pool, clock=lambda: NOW).render()).decode()
        counted = {
            m[0]: int(float(m[1])) for m in re.findall(r'keygate_keys\{provider="p",state="(\w+)"\} (\S+)', metrics)
        }
        expected = Counter(key_wide(rows, key_id) for key_id in ids)
        assert {s: n for s, n in counted.items() if n} == dict(expected)

        models = {m.name: m for m in (await gate.views.list_models()).models}
        for name, upstream in MODELS.items():
            states = Counter(per_model(rows, key_id, upstream) for key_id in ids)
            assert models[name].keys_ready == states["ready"], name
            summary = await model_summary(gate.config, gate.pool, name)
            said = Counter()
            for count, label in re.findall(r"(\d+) ([a-z -]+?)(?:,| of )", summary):
                said[label.replace(" on their client-side budget", "")] += int(count)
            assert said == states, (name, summary)
        assert {"cooling", "exhausted", "disabled", "ready"} <= set(expected)
