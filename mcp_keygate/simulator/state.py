"""The simulator's memory: per-key rate windows, the decision for each request, and the request log.

Decisions are API-neutral ("rate limited for 12 s"); each API module renders them in its own
wire format, so every API fails in exactly the same situations.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .scenario import KeyBehavior, Scenario

Failure = Literal[
    "ratelimit",
    "quota",
    "invalid",
    "overloaded",
    "spendlimit",
    "streamcut",
    "streamerror",
    "server_error",
    "context",
    "daily",
    "badjson",
]


def fingerprint(key: str) -> str:
    """How the request log names a key: tests compute the same for their own keys."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(slots=True)
class Window:
    started: float
    length: float
    requests: int = 0
    tokens: int = 0

    def roll(self, now: float) -> None:
        if now >= self.started + self.length:
            self.started, self.requests, self.tokens = now, 0, 0

    def reset_in(self, now: float) -> float:
        return max(0.0, self.started + self.length - now)


@dataclass(slots=True)
class Decision:
    failure: Failure | None
    behavior: KeyBehavior
    retry_after_s: float | None = None
    limit_requests: int = 10_000
    remaining_requests: int = 9_999
    reset_requests_s: float = 0.0
    limit_tokens: int = 1_000_000
    remaining_tokens: int = 999_000
    reset_tokens_s: float = 0.0
    context_window: int | None = None


@dataclass
class SimState:
    scenario: Scenario = field(default_factory=Scenario)
    log: list[dict[str, Any]] = field(default_factory=list)
    _minute: dict[str, Window] = field(default_factory=dict)
    _day: dict[str, Window] = field(default_factory=dict)
    _served: dict[str, int] = field(default_factory=dict)
    _first_seen: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(default_factory=lambda: random.Random(1234))

    def reset(self, scenario: Scenario | None = None) -> None:
        with self._lock:
            if scenario is not None:
                self.scenario = scenario
            self.log.clear()
            self._minute.clear()
            self._day.clear()
            self._served.clear()
            self._first_seen.clear()

    def decide(self, key: str, model: str, prompt_tokens: int) -> Decision:
        """What happens to this request, counting it against the key's windows when it is served."""
        behavior = self.scenario.behavior_for(key)
        now = time.time()
        with self._lock:
            if behavior.after is not None and behavior.then and self._served.get(key, 0) >= behavior.after:
                behavior = replace(behavior, behavior=behavior.then)
            first = self._first_seen.setdefault(key, now)
            if behavior.recover_after_s is not None and now - first >= behavior.recover_after_s:
                behavior = replace(behavior, behavior="ok")
            minute = self._minute.setdefault(key, Window(now, 60.0))
            day = self._day.setdefault(key, Window(now, 86400.0))
            minute.roll(now)
            day.roll(now)
            rpm = behavior.rpm or 10_000
            tpm = behavior.tpm or 1_000_000
            decision = Decision(
                None,
                behavior,
                limit_requests=rpm,
                remaining_requests=max(0, rpm - minute.requests),
                reset_requests_s=minute.reset_in(now),
                limit_tokens=tpm,
                remaining_tokens=max(0, tpm - minute.tokens),
                reset_tokens_s=minute.reset_in(now),
                context_window=self.scenario.context_windows.get(model),
            )
            if behavior.behavior != "ok":
                decision.failure = behavior.behavior  # type: ignore[assignment]
                if behavior.behavior == "ratelimit":
                    decision.retry_after_s = behavior.retry_after_s
                    decision.remaining_requests = 0
                    decision.reset_requests_s = behavior.retry_after_s
                return decision
            if decision.context_window is not None and prompt_tokens > decision.context_window:
                decision.failure = "context"
                return decision
            if behavior.rpd is not None and day.requests >= behavior.rpd:
                decision.failure = "daily"
                decision.retry_after_s = day.reset_in(now)
                return decision
            if minute.requests >= rpm or minute.tokens + prompt_tokens > tpm:
                decision.failure = "ratelimit"
                decision.retry_after_s = max(1.0, round(minute.reset_in(now)))
                decision.remaining_requests = max(0, rpm - minute.requests)
                return decision
            if behavior.error_rate and self._random.random() < behavior.error_rate:
                decision.failure = "server_error"
                return decision
            self._served[key] = self._served.get(key, 0) + 1
            minute.requests += 1
            minute.tokens += prompt_tokens
            day.requests += 1
            decision.remaining_requests = max(0, rpm - minute.requests)
            decision.remaining_tokens = max(0, tpm - minute.tokens)
            return decision

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            entry.setdefault("ts", time.time())
            self.log.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.log)


def estimate_tokens(texts: list[str]) -> int:
    """Roughly 4 characters a token, plus a few per message, like the real tokenizers on English."""
    return sum(len(t) // 4 + 4 for t in texts)


def reply_text(model: str, messages: list[dict[str, str]], system: str | None) -> str:
    """A deterministic answer that reveals what the model received (for context-replay checks)."""
    last_user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    snippet = " ".join(last_user.split())[:80]
    return (
        f"[{model}] I received {len(messages)} message(s), system prompt: {'yes' if system else 'no'}. "
        f'You said: "{snippet}"'
    )
