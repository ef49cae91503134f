"""The OpenAI-compatible provider types: defaults as each provider documents them, zero-config from
the environment, and Perplexity's strict turn order spoken by the simulator over real HTTP."""

from __future__ import annotations

import httpx2
import pytest

from mcp_keygate.config import config_from_env, parse_config
from mcp_keygate.keys import ApiKey
from mcp_keygate.messages import Message
from mcp_keygate.outcomes import Outcome
from mcp_keygate.provider_types import PROVIDER_TYPES
from mcp_keygate.providers import CallParams, build_provider, send_attempt

NEW_TYPES = {
    "xai": ("https://api.x.ai/v1", "XAI"),
    "together": ("https://api.together.xyz/v1", "TOGETHER"),
    "fireworks": ("https://api.fireworks.ai/inference/v1", "FIREWORKS"),
    "cerebras": ("https://api.cerebras.ai/v1", "CEREBRAS"),
    "perplexity": ("https://api.perplexity.ai", "PERPLEXITY"),
    "deepinfra": ("https://api.deepinfra.com/v1/openai", "DEEPINFRA"),
    "nvidia": ("https://integrate.api.nvidia.com/v1", "NVIDIA"),
    "vllm": ("http://localhost:8000/v1", None),
    "lmstudio": ("http://localhost:1234/v1", None),
    "llamacpp": ("http://localhost:8080/v1", None),
}


@pytest.mark.parametrize("kind", sorted(NEW_TYPES))
def test_each_new_type_has_its_documented_base_url_and_speaks_openai_with_a_bearer_key(kind):
    info = PROVIDER_TYPES[kind]
    assert (info.base_url, info.env_prefix) == NEW_TYPES[kind] and info.wire == "openai"
    assert info.key_required == (info.env_prefix is not None)  # local servers need no key
    keys = ["k-test-000000001"] if info.key_required else []
    config = parse_config(
        {"providers": {"p": {"type": kind, "keys": keys}}, "models": {"m": {"provider": "p", "model": "x"}}}
    )
    provider = build_provider("p", config.providers["p"])
    with httpx2.Client() as client:
        request = provider.build_request(
            client, ApiKey.create("p", "k-test-000000001", 0), "x", [Message("user", "hi")], CallParams()
        )
    assert str(request.url) == f"{NEW_TYPES[kind][0]}/chat/completions"
    assert request.headers["authorization"] == "Bearer k-test-000000001"


def test_zero_config_finds_the_new_hosted_types_in_the_environment():
    config = config_from_env({"XAI_API_KEY": "xai-key-0001", "PPLX_API_KEY": "pplx-key-0001"})
    assert {p.type for p in config.providers.values()} >= {"xai", "perplexity"}


@pytest.mark.anyio
async def test_perplexity_turns_are_merged_so_its_strict_order_accepts_them(sim):
    """The simulator rejects two user turns in a row on its Perplexity route, as Perplexity does; the
    perplexity type merges them first, a plain OpenAI-compatible type does not."""
    history = [Message("system", "s"), Message("user", "first"), Message("user", "second")]
    key = ApiKey.create("p", "sim-ok-perplexity-01", 0)
    outcomes = {}
    for kind in ("perplexity", "together"):
        data = {"providers": {"p": {"type": kind, "base_url": f"{sim.url}/perplexity", "keys": [key.secret]}}}
        provider = build_provider("p", parse_config(data).providers["p"])
        async with httpx2.AsyncClient() as client:
            attempt = await send_attempt(provider, client, key, "sonar", history, CallParams())
        outcomes[kind] = attempt.verdict.outcome
    assert outcomes == {"perplexity": Outcome.OK, "together": Outcome.BAD_REQUEST}
