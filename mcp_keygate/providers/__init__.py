"""Provider adapters, one per wire format."""

from __future__ import annotations

from ..config import ProviderConfig
from .base import Attempt, CallParams, MalformedResponse, Provider, send_attempt
from .openai import OpenAIProvider


def build_provider(name: str, config: ProviderConfig) -> Provider:
    """The adapter for a `[providers.NAME]` table."""
    if config.type == "openai":
        return OpenAIProvider(name, config.resolved_base_url(), config.headers)
    raise ValueError(f"providers.{name}.type: unsupported type {config.type!r}")


__all__ = ["Attempt", "CallParams", "MalformedResponse", "OpenAIProvider", "Provider", "build_provider", "send_attempt"]
