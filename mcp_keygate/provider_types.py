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
    stream_options: bool = True  # accepts `stream_options: {include_usage: true}`
    alternate_roles: bool = False  # rejects two turns of the same role in a row (merged before sending)


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
        "openai",
        "https://api.mistral.ai/v1",
        "MISTRAL",
        default_models=(("mistral-small-latest", 131_072),),
        stream_options=False,
    ),
    "deepseek": ProviderTypeInfo(
        "openai", "https://api.deepseek.com", "DEEPSEEK", default_models=(("deepseek-chat", 128_000),)
    ),
    "openrouter": ProviderTypeInfo(
        "openai", "https://openrouter.ai/api/v1", "OPENROUTER", default_models=(("openrouter/auto", None),)
    ),
    "ollama": ProviderTypeInfo("openai", "http://localhost:11434/v1", None, key_required=False),
    "azure": ProviderTypeInfo("openai", None, None),
    # OpenAI-compatible hosted APIs (Bearer keys; base URLs as each provider documents them).
    "xai": ProviderTypeInfo("openai", "https://api.x.ai/v1", "XAI"),
    "together": ProviderTypeInfo("openai", "https://api.together.xyz/v1", "TOGETHER"),
    "fireworks": ProviderTypeInfo("openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS"),
    "cerebras": ProviderTypeInfo("openai", "https://api.cerebras.ai/v1", "CEREBRAS"),
    "perplexity": ProviderTypeInfo(
        "openai", "https://api.perplexity.ai", "PERPLEXITY", extra_env_keys=("PPLX_API_KEY",), alternate_roles=True
    ),
    "deepinfra": ProviderTypeInfo("openai", "https://api.deepinfra.com/v1/openai", "DEEPINFRA"),
    "nvidia": ProviderTypeInfo("openai", "https://integrate.api.nvidia.com/v1", "NVIDIA"),
    # Local OpenAI-compatible servers: no key unless the server was started with one.
    "vllm": ProviderTypeInfo("openai", "http://localhost:8000/v1", None, key_required=False),
    "lmstudio": ProviderTypeInfo("openai", "http://localhost:1234/v1", None, key_required=False),
    "llamacpp": ProviderTypeInfo("openai", "http://localhost:8080/v1", None, key_required=False),
}

ProviderType = Literal[
    "openai",
    "anthropic",
    "gemini",
    "groq",
    "mistral",
    "deepseek",
    "openrouter",
    "ollama",
    "azure",
    "xai",
    "together",
    "fireworks",
    "cerebras",
    "perplexity",
    "deepinfra",
    "nvidia",
    "vllm",
    "lmstudio",
    "llamacpp",
]
