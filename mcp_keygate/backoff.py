"""Holds on whole models and whole providers, shared by every call of this process.

- A model that said "overloaded" twice in one call is spared for a moment (its retry-after, or 5 s).
- A provider that cannot be reached at all — connection refused, a host name that does not
  resolve, a TLS failure — is not busy: every key and model behind it would fail the same way. The
  route moves on at once, and the provider is held back for a short interval that doubles with
  each failure (2 s … 60 s), so a dead endpoint costs one attempt per interval, not one per call.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_BACKOFF_S = 5.0
UNREACHABLE_FIRST_S = 2.0
UNREACHABLE_MAX_S = 60.0


@dataclass(slots=True)
class Unreachable:
    until: float
    strikes: int
    reason: str  # e.g. "connection refused"


class Backoffs:
    def __init__(self) -> None:
        self._models: dict[tuple[str, str], float] = {}
        self._providers: dict[str, Unreachable] = {}

    def model_wait(self, provider: str, upstream: str, now: float) -> float:
        """Seconds this model is still spared (0: not held)."""
        return max(0.0, self._models.get((provider, upstream), 0.0) - now)

    def spare_model(self, provider: str, upstream: str, seconds: float | None, now: float) -> None:
        self._models[(provider, upstream)] = now + (seconds or MODEL_BACKOFF_S)

    def unreachable(self, provider: str, now: float) -> Unreachable | None:
        """The provider's hold while it lasts."""
        held = self._providers.get(provider)
        return held if held is not None and held.until > now else None

    def mark_unreachable(self, provider: str, reason: str, now: float) -> float:
        """Hold the provider back; the interval doubles with each failure in a row. Returns it."""
        previous = self._providers.get(provider)
        strikes = previous.strikes + 1 if previous is not None else 1
        seconds = min(UNREACHABLE_FIRST_S * 2 ** (strikes - 1), UNREACHABLE_MAX_S)
        self._providers[provider] = Unreachable(now + seconds, strikes, reason)
        return seconds

    def mark_reachable(self, provider: str) -> None:
        self._providers.pop(provider, None)

    def down(self) -> dict[str, Unreachable]:
        """Every provider that failed to connect last time it was tried (held or not)."""
        return dict(self._providers)
