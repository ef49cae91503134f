"""Recent attempts and fallbacks, kept in memory for the /status page.

A small ring of the latest attempts (what a person glancing at the page wants: "what just
happened, and why"), counters of fallbacks per model pair and the money spent per caller, model
and key since the server started. Nothing here is durable; the key records and usage rows in the
store are the state that matters (`usage`, `status --usage`).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    at: float
    provider: str
    model: str
    key_id: str
    outcome: str
    seconds: float


class Activity:
    """A RouterObserver that remembers; cheap enough to run on every attempt."""

    def __init__(self, keep: int = 50) -> None:
        self.started = time.time()
        self.attempts: deque[AttemptEvent] = deque(maxlen=keep)
        self.fallbacks: Counter[tuple[str, str]] = Counter()
        self.spend: dict[tuple[str, str, str], list[float]] = {}  # (caller, model, key) → [dollars, calls, unpriced]
        # Whether a token name may see every caller's spend (the server sets it: operators only).
        self.sees_all: Callable[[str], bool] = lambda name: True

    def on_attempt(self, provider: str, model: str, key_id: str, outcome: str, seconds: float) -> None:
        self.attempts.append(AttemptEvent(time.time(), provider, model, key_id, outcome, seconds))

    def on_fallback(self, from_model: str, to_model: str) -> None:
        self.fallbacks[(from_model, to_model)] += 1

    def on_cost(self, caller: str, model: str, key_id: str, cost_usd: float | None) -> None:
        line = self.spend.setdefault((caller, model, key_id), [0.0, 0, 0])
        line[0] += cost_usd or 0.0
        line[1] += 1
        line[2] += cost_usd is None

    def spending(self, viewer: str | None = None) -> list[tuple[tuple[str, str, str], list[float]]]:
        """Spend per (caller, model, key), biggest first: everyone's, or only `viewer`'s own unless
        `sees_all` says the viewer is an operator (as with the `usage` tool and /metrics)."""
        lines = [item for item in self.spend.items() if viewer is None or self.sees_all(viewer) or item[0][0] == viewer]
        return sorted(lines, key=lambda item: -item[1][0])

    def recent(self, models: set[str] | None = None) -> list[AttemptEvent]:
        """Newest first, limited to `models` when given (a team sees only what its policy reaches)."""
        events = [e for e in self.attempts if models is None or e.model in models]
        return events[::-1]

    def fallbacks_between(self, models: set[str] | None = None) -> list[tuple[tuple[str, str], int]]:
        """Fallback counts, most frequent first; with `models`, only those between two of them."""
        pairs = [(pair, n) for pair, n in self.fallbacks.items() if models is None or set(pair) <= models]
        return sorted(pairs, key=lambda item: -item[1])
