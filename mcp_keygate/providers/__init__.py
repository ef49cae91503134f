"""Provider adapters, one per wire format."""

from __future__ import annotations

from ..config import ProviderConfig
from ..outcomes import Headroom
from ..provider_types import PROVIDER_TYPES
from .anthropic import AnthropicProvider
from .base import Attempt, CallParams, MalformedResponse, Provider, send_attempt
from .gemini import GeminiProvider
from .openai import OpenAIProvider


def build_provider(name: str, config: ProviderConfig) -> Provider:
    """The adapter for a `[providers.NAME]` table."""
    base_url = config.resolved_base_url()
    if config.wire == "anthropic":
        return AnthropicProvider(name, base_url, config.headers)
    if config.wire == "gemini":
        return GeminiProvider(name, base_url, config.headers)
    info = PROVIDER_TYPES[config.type]
    return OpenAIProvider(
        name,
        base_url,
        config.headers,
        azure=config.type == "azure",
        azure_api_version=config.api_version,
        stream_options=info.stream_options,
        alternate_roles=info.alternate_roles,
    )


__all__ = [
    "AnthropicProvider",
    "Attempt",
    "CallParams",
    "GeminiProvider",
    "Headroom",
    "MalformedResponse",
    "OpenAIProvider",
    "Provider",
    "build_provider",
    "send_attempt",
]
