"""Token estimates per model, and fitting a history into a model's context window.

The estimate is deliberately cheap (about 4 characters a token) and is corrected per model by
the input-token counts the providers report, so it tracks each model's real tokenizer.
"""

from __future__ import annotations

import math

from .messages import Message

CHARS_PER_TOKEN = 4.0
TOKENS_PER_MESSAGE = 4


# What an attachment costs in tokens, roughly: an image ~1,000 (providers bill 85–1,600 by size), a
# PDF page ~1,500 with its image (~one page per 50 kB), text like any text.
IMAGE_TOKENS = 1_000
PDF_TOKENS_PER_BYTE = 1_500 / 50_000


def raw_estimate(messages: list[Message]) -> float:
    return sum(len(m.content) / CHARS_PER_TOKEN + TOKENS_PER_MESSAGE + _attached(m) for m in messages)


def _attached(message: Message) -> float:
    total = 0.0
    for a in message.attachments:
        if a.kind == "image":
            total += IMAGE_TOKENS
        elif a.kind == "pdf":
            total += max(IMAGE_TOKENS, a.size * PDF_TOKENS_PER_BYTE)
        else:
            total += a.size / CHARS_PER_TOKEN
    return total


class TokenEstimator:
    """chars/4 per message, scaled per model by what its provider's `usage` said last time."""

    def __init__(self) -> None:
        self._scale: dict[str, float] = {}

    def estimate(self, model: str, messages: list[Message]) -> int:
        return math.ceil(raw_estimate(messages) * self._scale.get(model, 1.0))

    def calibrate(self, model: str, messages: list[Message], input_tokens: int) -> None:
        """Move the model's scale towards the provider's own count (a moving average, bounded)."""
        raw = raw_estimate(messages)
        if input_tokens <= 0 or raw <= 0:
            return
        observed = min(4.0, max(0.25, input_tokens / raw))
        current = self._scale.get(model)
        self._scale[model] = observed if current is None else 0.7 * current + 0.3 * observed


def reserve_for_answer(context_window: int, max_tokens: int | None) -> int:
    """Room kept for the answer: the caller's cap, else a quarter of the window up to 4,096 tokens."""
    if max_tokens is not None:
        return max_tokens
    return min(4096, context_window // 4)


def fit_history(
    messages: list[Message], budget: int, estimate: TokenEstimator, model: str
) -> tuple[list[Message], int]:
    """Drop the oldest turns until `messages` fit `budget` tokens; return them and how many were dropped.

    The system prompt and the newest user turn (with anything after it) are never dropped; if
    they alone do not fit, they are sent anyway and the upstream's overflow error decides.
    """
    if estimate.estimate(model, messages) <= budget:
        return messages, 0
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=len(messages))
    system = [m for m in messages[:last_user] if m.role == "system"]
    history = [m for m in messages[:last_user] if m.role != "system"]
    newest = messages[last_user:]
    dropped = 0
    while history and estimate.estimate(model, system + history + newest) > budget:
        history.pop(0)
        dropped += 1
    return system + history + newest, dropped
