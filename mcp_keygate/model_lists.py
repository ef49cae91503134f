"""What each key of a provider can reach: the provider's own model list, per key.

OpenAI-compatible `GET {base}/models`, Anthropic `GET {base}/v1/models` (paged), Gemini
`GET {base}/v1beta/models` (paged). A key the provider refuses is reported with the classified
reason, never with the key itself. Used by `mcp-keygate models` and `check --online`, so a misspelt
model is found before it shows up as failed calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx2

from .config import Config, ProviderConfig
from .keys.secret import ApiKey, scrub
from .providers import build_provider
from .providers.anthropic import API_VERSION
from .providers.base import decode_json

MAX_PAGES = 20


@dataclass(slots=True)
class KeyModels:
    """One key's answer: the model ids it can reach, or why the provider would not say."""

    key_id: str
    models: list[str] = field(default_factory=list)
    error: str | None = None


class ListingUnsupported(Exception):
    """This provider type has no model list mcp-keygate can read."""


async def list_provider_models(config: Config, name: str, client: httpx2.AsyncClient) -> list[KeyModels]:
    """Every key of provider `name` with the models it lists (a keyless provider: one anonymous row)."""
    provider = config.providers[name]
    if provider.type == "azure":
        raise ListingUnsupported("azure lists deployments in the Azure portal, not to an api-key")
    keys = config.resolve_keys().get(name) or []
    if not keys:
        keys = [ApiKey.create(name, "", 0)]
    return [await _one_key(name, provider, key, client) for key in keys]


async def _one_key(name: str, provider: ProviderConfig, key: ApiKey, client: httpx2.AsyncClient) -> KeyModels:
    row = KeyModels(key.key_id)
    secrets = [key.secret] if key.secret else []
    try:
        row.models = await _pages(name, provider, key, client)
    except _Refused as exc:
        row.error = scrub(str(exc), secrets)
    except httpx2.HTTPError as exc:
        row.error = scrub(f"cannot list models: {type(exc).__name__}", secrets)
    return row


class _Refused(Exception):
    pass


async def _pages(name: str, provider: ProviderConfig, key: ApiKey, client: httpx2.AsyncClient) -> list[str]:
    base = provider.resolved_base_url()
    wire = provider.wire
    headers = dict(provider.headers)
    params: dict[str, str] = {}
    if wire == "anthropic":
        url, headers["anthropic-version"] = f"{base}/v1/models", API_VERSION
        params["limit"] = "1000"
        if key.secret:
            headers["x-api-key"] = key.secret
    elif wire == "gemini":
        url, params["pageSize"] = f"{base}/v1beta/models", "1000"
        if key.secret:
            headers["x-goog-api-key"] = key.secret
    else:
        url = f"{base}/models"
        if key.secret:
            headers["Authorization"] = f"Bearer {key.secret}"
    found: list[str] = []
    for _ in range(MAX_PAGES):
        response = await client.get(url, headers=headers, params=params, follow_redirects=False)
        body = decode_json(response.content)
        if response.status_code != 200:
            verdict = build_provider(name, provider).classify(response.status_code, response.headers, body)
            raise _Refused(f"{verdict.outcome.value}: {verdict.reason}")
        ids, cursor = _read_page(wire, body)
        found += ids
        if cursor is None:
            break
        params["after_id" if wire == "anthropic" else "pageToken"] = cursor
    return sorted(dict.fromkeys(found))


def _read_page(wire: str, body: Any) -> tuple[list[str], str | None]:
    """The ids on one page, and the cursor of the next page (None: the last)."""
    if not isinstance(body, dict):
        raise _Refused("the model list is not a JSON object")
    if wire == "gemini":
        models = body.get("models") or []
        ids = [str(m.get("name", "")).removeprefix("models/") for m in models if isinstance(m, dict)]
        token = body.get("nextPageToken")
        return ids, str(token) if token else None
    data = body.get("data") or []
    ids = [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
    more = wire == "anthropic" and body.get("has_more") and body.get("last_id")
    return ids, str(body["last_id"]) if more else None


async def missing_models(config: Config, client: httpx2.AsyncClient) -> list[str]:
    """One line per configured model that a key of its provider does not list (and per key that fails)."""
    problems: list[str] = []
    for provider_name in sorted({m.provider for m in config.models.values()}):
        try:
            rows = await list_provider_models(config, provider_name, client)
        except ListingUnsupported as exc:
            problems.append(f"providers.{provider_name}: not checked online ({exc})")
            continue
        for row in rows:
            if row.error is not None:
                problems.append(f"providers.{provider_name} key {row.key_id}: {row.error}")
                continue
            for model_name, model in sorted(config.models.items()):
                upstream = config.upstream_model(model_name)
                if model.provider == provider_name and upstream not in row.models:
                    problems.append(
                        f"models.{model_name}.model = {upstream!r}: provider {provider_name} (key {row.key_id}) "
                        "does not list it"
                    )
    return problems
