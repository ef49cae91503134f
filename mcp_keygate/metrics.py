"""Prometheus metrics for the HTTP transports (prometheus-client, imported only when serving HTTP).

The router reports each attempt and fallback here; key states are read from the pool at scrape
time, so the gauge never drifts from what `key_status` says.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .keys.base import KeyPool
from .keys.rules import key_state
from .keys.state import KeyState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_COOLDOWN_OUTCOMES = {"rate_limited": "cooling", "quota_exhausted": "exhausted", "auth_failed": "disabled"}


class Metrics:
    """Implements the router's observer interface."""

    def __init__(self, pool: KeyPool, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "keygate_upstream_requests",
            "Upstream attempts by provider, model, key id and outcome.",
            ["provider", "model", "key_id", "outcome"],
            registry=self.registry,
        )
        self.cooldowns = Counter(
            "keygate_cooldowns_started",
            "Keys set aside, by the state they entered.",
            ["provider", "key_id", "state"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "keygate_fallbacks",
            "Calls that moved from one model to the next.",
            ["from_model", "to_model"],
            registry=self.registry,
        )
        self.calls = Counter(
            "keygate_tool_calls",
            "complete calls by caller (token name) and result.",
            ["caller", "result"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "keygate_upstream_latency_seconds",
            "Upstream latency per attempt.",
            ["provider", "model"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.tokens = Counter(
            "keygate_tokens",
            "Tokens used, by caller (token name), model, key id and direction (in, out).",
            ["caller", "model", "key_id", "direction"],
            registry=self.registry,
        )
        self.cost = Counter(
            "keygate_cost_usd",
            "US dollars spent, by caller (token name), model and key id (priced calls only).",
            ["caller", "model", "key_id"],
            registry=self.registry,
        )
        self.unpriced = Counter(
            "keygate_unpriced_calls",
            "Answered calls whose price is unknown (not in keygate_cost_usd_total), by caller and model.",
            ["caller", "model"],
            registry=self.registry,
        )
        self.keys = Gauge(
            "keygate_keys", "Keys per provider and state (any model).", ["provider", "state"], registry=self.registry
        )
        self.pool = pool
        self.clock = clock

    def on_attempt(self, provider: str, model: str, key_id: str, outcome: str, seconds: float) -> None:
        self.attempts.labels(provider, model, key_id, outcome).inc()
        self.latency.labels(provider, model).observe(seconds)
        if outcome in _COOLDOWN_OUTCOMES:
            self.cooldowns.labels(provider, key_id, _COOLDOWN_OUTCOMES[outcome]).inc()

    def on_fallback(self, from_model: str, to_model: str) -> None:
        self.fallbacks.labels(from_model, to_model).inc()

    def on_call(self, caller: str, result: str) -> None:
        self.calls.labels(caller, result).inc()

    def on_usage(self, caller: str, model: str, key_id: str, input_tokens: int, output_tokens: int) -> None:
        self.tokens.labels(caller, model, key_id, "in").inc(input_tokens)
        self.tokens.labels(caller, model, key_id, "out").inc(output_tokens)

    def on_cost(self, caller: str, model: str, key_id: str, cost_usd: float | None) -> None:
        if cost_usd is None:
            self.unpriced.labels(caller, model).inc()
        else:
            self.cost.labels(caller, model, key_id).inc(cost_usd)

    async def render(self) -> bytes:
        """The exposition text, with key states read from the pool (the shared one on Redis) now."""
        now = self.clock()
        for provider in self.pool.providers():
            counts = dict.fromkeys((s.value for s in KeyState), 0)
            for record in await self.pool.records(provider):
                counts[key_state(record, None, now).value] += 1
            for state, count in counts.items():
                self.keys.labels(provider, state).set(count)
        return generate_latest(self.registry)
