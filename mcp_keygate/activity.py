"""Recent attempts and fallbacks, kept in memory for the /status page.

A small ring of the latest attempts (what a person glancing at the page wants: "what just
happened, and why") and counters of fallbacks per model pair since the server started. Nothing
here is durable; the key records in the store are the state that matters.
"""

from __future__ import annotations

import time
from collections import Counter, deque
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

    def on_attempt(self, provider: str, model: str, key_id: str, outcome: str, seconds: float) -> None:
        self.attempts.append(AttemptEvent(time.time(), provider, model, key_id, outcome, seconds))

    def on_fallback(self, from_model: str, to_model: str) -> None:
        self.fallbacks[(from_model, to_model)] += 1

    def recent(self, models: set[str] | None = None) -> list[AttemptEvent]:
        """Newest first, limited to `models` when given (a team sees only what its policy reaches)."""
        events = [e for e in self.attempts if models is None or e.model in models]
        return events[::-1]

    def fallbacks_between(self, models: set[str] | None = None) -> list[tuple[tuple[str, str], int]]:
        """Fallback counts, most frequent first; with `models`, only those between two of them."""
        pairs = [(pair, n) for pair, n in self.fallbacks.items() if models is None or set(pair) <= models]
        return sorted(pairs, key=lambda item: -item[1])
