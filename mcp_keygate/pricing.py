"""What a call cost in US dollars: the model's token usage times its price.

Prices come from `genai-prices` (the pydantic team's maintained table, bundled with the package, no
network) unless the config names a price for the model (`[models.NAME] price = {…}`: private
deployments, negotiated rates, local models that cost nothing). A model neither knows is *unknown*:
`None`, never 0, so a sum of costs never pretends an unpriced call was free.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from decimal import Decimal

from .config import Config

log = logging.getLogger("mcp_keygate.pricing")

# Our provider types → genai-prices provider ids (types not listed are looked up by model name only
# when the upstream is a well-known one; local servers have no public price).
_PRICE_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "groq": "groq",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "openrouter": "openrouter",
    "azure": "azure",
    "xai": "x-ai",
    "together": "together",
    "fireworks": "fireworks",
    "perplexity": "perplexity",
}
MTOK = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens, and where the figure came from."""

    input_per_mtok: float
    output_per_mtok: float
    source: str  # "config" or "genai-prices"


class Prices:
    """Prices for the configured models; a lookup is cached per (provider type, upstream model)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def price(self, name: str) -> Price | None:
        """The price of the configured model `name`, or None when nobody knows it."""
        model = self.config.models.get(name)
        if model is None:
            return None
        if model.price is not None:
            return Price(model.price.input_per_mtok, model.price.output_per_mtok, "config")
        provider = self.config.providers[model.provider]
        return _table_price(_PRICE_PROVIDERS.get(provider.type), self.config.upstream_model(name))

    def cost(self, name: str, input_tokens: int, output_tokens: int) -> float | None:
        """US dollars for this usage on model `name` (None: price unknown)."""
        model = self.config.models.get(name)
        if model is None:
            return None
        if model.price is not None:
            return _linear(model.price.input_per_mtok, model.price.output_per_mtok, input_tokens, output_tokens)
        provider = _PRICE_PROVIDERS.get(self.config.providers[model.provider].type)
        if provider is None:
            return None
        return _table_cost(provider, self.config.upstream_model(name), input_tokens, output_tokens)

    def estimate(self, chain: list[str], input_tokens: int, output_tokens: int) -> float:
        """The most this usage could cost on any priced model of the route (what a budget reserves)."""
        costs = [self.cost(name, input_tokens, output_tokens) for name in chain]
        return max((c for c in costs if c is not None), default=0.0)

    def unpriced(self, names: list[str] | set[str]) -> list[str]:
        """The models among `names` whose price nobody knows."""
        return sorted(n for n in names if self.price(n) is None)


def _linear(input_per_mtok: float, output_per_mtok: float, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * input_per_mtok + output_tokens * output_per_mtok) / MTOK


@functools.lru_cache(maxsize=256)
def _table_price(provider: str | None, model: str) -> Price | None:
    """The table's list price for a million tokens in and out (for display; tiers ignored)."""
    if provider is None:
        return None
    rates = _small_call_rates(provider, model)
    return None if rates is None else Price(rates[0], rates[1], "genai-prices")


# The table's prices are linear below its lowest tier (the smallest `start` in genai-prices is 32,000
# tokens): there, a call's cost is the cached per-token rates times its usage (≈1 µs) instead of a
# table search (≈300 µs). Larger calls are priced by the table itself, tiers and all.
LINEAR_BELOW = 32_000


def _table_cost(provider: str, model: str, input_tokens: int, output_tokens: int) -> float | None:
    if input_tokens < LINEAR_BELOW and output_tokens < LINEAR_BELOW:
        rates = _small_call_rates(provider, model)
        return None if rates is None else _linear(*rates, input_tokens, output_tokens)
    return _exact_cost(provider, model, input_tokens, output_tokens)


@functools.lru_cache(maxsize=256)
def _small_call_rates(provider: str, model: str) -> tuple[float, float] | None:
    """Dollars per million tokens in and out, measured at 1,000 tokens (below every tier)."""
    per_in = _exact_cost(provider, model, 1000, 0)
    per_out = _exact_cost(provider, model, 0, 1000)
    if per_in is None or per_out is None:
        return None
    return per_in * 1000, per_out * 1000


def _exact_cost(provider: str, model: str, input_tokens: int, output_tokens: int) -> float | None:
    if not _known(provider, model):
        return None
    from genai_prices import Usage, calc_price  # 0.2 s to import: only once a price is needed

    try:
        found = calc_price(Usage(input_tokens=input_tokens, output_tokens=output_tokens), model, provider_id=provider)
    except LookupError:
        return None
    return float(Decimal(found.total_price))


@functools.lru_cache(maxsize=256)
def _known(provider: str, model: str) -> bool:
    """Whether the table prices this model (looked up once: a miss must not cost a search per call)."""
    from genai_prices import Usage, calc_price

    try:
        calc_price(Usage(input_tokens=1, output_tokens=1), model, provider_id=provider)
    except LookupError:
        log.info("no price known for %s model %r; its calls are shown with an unknown cost", provider, model)
        return False
    except Exception as exc:  # the table itself failing must not fail a call
        log.warning("price lookup for %s model %r failed: %s", provider, model, type(exc).__name__)
        return False
    return True


def rounded(cost: float | None) -> float | None:
    """A cost as shown to agents: to 1e-10 dollars (a cheap call costs a few millionths)."""
    return None if cost is None else round(cost, 10)
