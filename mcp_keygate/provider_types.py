"""Provider types by name: which wire format each speaks, where it lives, and how it is found in the env.

Pure data, so the config can use it without loading any HTTP code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Wire = Literal["openai", "anthropic", "gemini"]


@dataclass(frozen=True, slots=True)
class ProviderTypeInfo:
    wire: Wire
    base_url: str | None  # None: the user must give one (Azure)
    env_prefix: str | None  # zero-config: <PREFIX>_API_KEY / <PREFIX>_API_KEYS
    key_required: bool = True
    default_models: tuple[tuple[str, int | None], ...] = ()  # (upstream id, context window)
    extra_env_keys: tuple[str, ...] = ()


PROVIDER_TYPES: dict[str, ProviderTypeInfo] = {
    "openai": ProviderTypeInfo(
        "openai",
        "https://api.openai.com/v1",
        "OPENAI",
        default_models=(("gpt-4.1-mini", 1_047_576), ("gpt-4.1", 1_047_576)),
    ),
    "anthropic": ProviderTypeInfo(
        "anthropic",
        "https://api.anthropic.com",
        "ANTHROPIC",
        default_models=(("claude-sonnet-5", 200_000), ("claude-haiku-4-5", 200_000)),
    ),
    "gemini": ProviderTypeInfo(
        "gemini",
        "https://generativelanguage.googleapis.com",
        "GEMINI",
        default_models=(("gemini-2.5-flash", 1_048_576), ("gemini-2.5-pro", 1_048_576)),
        extra_env_keys=("GOOGLE_API_KEY",),
    ),
    "groq": ProviderTypeInfo(
        "openai", "https://api.groq.com/openai/v1", "GROQ", default_models=(("llama-3.3-70b-versatile", 131_072),)
    ),
    "mistral": ProviderTypeInfo(
        "openai", "https://api.mistral.ai/v1", "MISTRAL", default_models=(("mistral-small-latest", 131_072),)
    ),
    "deepseek": ProviderTypeInfo(
        "openai", "https://api.deepseek.com", "DEEPSEEK", default_models=(("deepseek-chat", 128_000),)
    ),
    "openrouter": ProviderTypeInfo(
        "openai", "https://openrouter.ai/api/v1", "OPENROUTER", default_models=(("openrouter/auto", None),)
    ),
    "ollama": ProviderTypeInfo("openai", "http://localhost:11434/v1", None, key_required=False),
    "azure": ProviderTypeInfo("openai", None, None),
}

ProviderType = Literal["openai", "anthropic", "gemini", "groq", "mistral", "deepseek", "openrouter", "ollama", "azure"]
