"""API keys as the rest of the program sees them: a stable id, a mask, and a sealed secret.

The secret is only read by a provider when it builds the HTTP request. Everything that can be
shown (ids, masks, error text) is derived here so no other module handles raw key material.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache

from .budget import NO_BUDGET, Budget

_SCRUB_WINDOW = 8


def key_id_for(provider: str, secret: str, digits: int = 6) -> str:
    """`provider:6hex` — stable across restarts and reordering, reveals nothing of the secret."""
    digest = hashlib.sha256(f"{provider}\x00{secret}".encode()).hexdigest()
    return f"{provider}:{digest[:digits]}"


def keys_for(provider: str, secrets: list[str], budgets: dict[str, Budget] | None = None) -> list[ApiKey]:
    """One ApiKey per distinct secret, ids unique within the provider.

    Six hex digits read well, but two of a thousand keys share them about 3 % of the time (and
    hundreds do among 100,000): keys whose short ids collide get 16 digits instead.
    """
    secrets = list(dict.fromkeys(secrets))
    short = [key_id_for(provider, s) for s in secrets]
    seen: dict[str, int] = {}
    for key_id in short:
        seen[key_id] = seen.get(key_id, 0) + 1
    return [
        ApiKey(
            provider,
            secret,
            i,
            key_id if seen[key_id] == 1 else key_id_for(provider, secret, 16),
            mask_for(secret),
            (budgets or {}).get(secret, NO_BUDGET),
        )
        for i, (secret, key_id) in enumerate(zip(secrets, short, strict=True))
    ]


def mask_for(secret: str) -> str:
    """At most the last 4 characters, never more than a quarter of the key."""
    if not secret:
        return "(none)"
    visible = min(4, len(secret) // 4)
    return "…" + secret[-visible:] if visible else "…"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One configured key. `repr` and `str` never include the secret."""

    provider: str
    secret: str = field(repr=False)
    index: int = 0
    key_id: str = ""
    mask: str = ""
    budget: Budget = field(default=NO_BUDGET, compare=False)  # client-side limits (none by default)

    @classmethod
    def create(cls, provider: str, secret: str, index: int, budget: Budget = NO_BUDGET) -> ApiKey:
        return cls(provider, secret, index, key_id_for(provider, secret), mask_for(secret), budget)

    def __str__(self) -> str:
        return f"{self.key_id} ({self.mask})"


_LOOKS_LIKE_KEY = re.compile(
    r"\b(?:sk|pk|rk|gsk|sim|key|AIza)[-_A-Za-z0-9]{0,12}[-_][A-Za-z0-9_\-]{12,}|\bAIza[0-9A-Za-z_\-]{20,}"
)


def scrub(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove every run of ≥8 characters shared with a known secret, and anything key-shaped.

    Upstream errors echo parts of the key ("Incorrect API key provided: sk-…abcd"), so
    matching the whole secret is not enough.
    """
    if not text:
        return text
    grams = _grams(tuple(secrets))
    if grams and len(text) >= _SCRUB_WINDOW:
        chars = list(text)
        for i in range(len(text) - _SCRUB_WINDOW + 1):
            if text[i : i + _SCRUB_WINDOW] in grams:
                chars[i : i + _SCRUB_WINDOW] = "*" * _SCRUB_WINDOW
        text = "".join(chars)
    return _LOOKS_LIKE_KEY.sub("[redacted]", text)


@lru_cache(maxsize=64)
def _grams(secrets: tuple[str, ...]) -> frozenset[str]:
    """Every 8-character run of every secret (built once per set of secrets: logs scrub every line)."""
    return frozenset(
        secret[i : i + _SCRUB_WINDOW]
        for secret in secrets
        if len(secret) >= _SCRUB_WINDOW
        for i in range(len(secret) - _SCRUB_WINDOW + 1)
    )
