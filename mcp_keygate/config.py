"""The TOML config as pydantic models, env-var key references, and zero-config from the environment.

Every mistake is reported as `field.path: what is wrong (what was expected)`, all at once, so a
user fixes the file in one pass.
"""

from __future__ import annotations

import builtins
import difflib
import json
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .auth import token_name_problems
from .errors import KeygateError
from .keys.budget import NO_BUDGET, Budget
from .keys.secret import ApiKey, keys_for
from .provider_types import PROVIDER_TYPES, ProviderType
from .templates import TYPES, check_default, parse_shorthand, placeholders

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(KeygateError):
    """The config cannot be used; `problems` lists each field and what was expected."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


class _Strict(BaseModel):
    # No silent coercion: `port = "8931"` is a mistake to name, not a number to guess.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StateConfig(_Strict):
    backend: Literal["sqlite", "memory", "redis"] = "sqlite"
    path: str | None = None
    url: str | None = Field(None, description='redis: e.g. "redis://localhost:6379/0" (KEYGATE_REDIS_URL overrides)')
    prefix: str = Field("keygate", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="redis: key prefix")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must start with redis://, rediss:// or unix:// (got {value[:60]!r})")
        return value

    def redis_url(self, env: Mapping[str, str] | None = None) -> str:
        """Where Redis is: KEYGATE_REDIS_URL, else `url`; a ConfigError when neither says."""
        env = os.environ if env is None else env
        url = env.get("KEYGATE_REDIS_URL") or self.url
        if not url:
            raise ConfigError(
                [
                    'state.url: required for backend "redis" (e.g. url = "redis://localhost:6379/0", '
                    "or set KEYGATE_REDIS_URL)"
                ]
            )
        return url


class ServerConfig(_Strict):
    """The HTTP transports (`serve --transport sse|streamable-http|http`)."""

    host: str = "127.0.0.1"
    port: int = Field(8931, ge=0, le=65535)
    auth_tokens: dict[str, str] = Field(
        default_factory=dict, description="token name → token (an env reference); every MCP request needs one"
    )
    allowed_hosts: list[str] = Field(default_factory=list, description="Host headers accepted besides loopback")
    allowed_origins: list[str] = Field(default_factory=list)
    json_response: bool = Field(False, description="streamable HTTP: plain JSON replies (no progress events)")
    shutdown_grace_s: float = Field(10.0, gt=0, description="how long in-flight calls may finish on SIGTERM")
    enable_reset_key: bool = Field(False, description="offer the operator tool reset_key (operators only)")
    operator_tokens: list[str] | None = Field(
        None, description="token names that may read /metrics and reset keys (default: tokens no policy governs)"
    )
    max_sessions_per_token: int = Field(32, gt=0, description="open MCP sessions per token; the oldest idle closes")
    session_idle_timeout_s: float = Field(1800.0, gt=0, description="an MCP session with no request ends")
    header_timeout_s: float = Field(10.0, gt=0, description="a client must send a request's headers within this")
    body_timeout_s: float = Field(30.0, gt=0, description="a client must send a request's body within this")
    resume_events: int = Field(
        10_000, ge=0, description="streamable HTTP: events kept for clients that reconnect (0: no resumption)"
    )
    resume_buffer_mb: float = Field(
        32.0, gt=0, le=65536, description="memory all sessions' kept events may use (without Redis)"
    )
    resume_session_mb: float = Field(
        4.0, gt=0, le=65536, description="with Redis: what one session's kept events may use"
    )
    retry_ms: int = Field(2000, gt=0, description="how soon a client whose stream dropped should reconnect")
    rest_api: bool = Field(True, description="serve /v1/chat/completions, /v1/models and /v1/presets too")
    upstream_client: Literal["httpx2", "aiohttp"] = Field(
        "aiohttp", description="what carries upstream requests under httpx2's API: aiohttp's C parser, or httpx2's own"
    )
    file_roots: list[str] = Field(
        default_factory=list,
        description="stdio: folders `files`/`images` paths may come from when the client declares no MCP roots",
    )


class LimitsConfig(_Strict):
    """Bounds on what one call may ask for or bring back; over a bound is a clear error, never a crash."""

    max_prompt_chars: int = Field(400_000, gt=0, description="prompt, and each message's content")
    max_messages: int = Field(500, gt=0, description="messages in one call")
    max_conversation_turns: int = Field(5_000, gt=0, description="turns stored in one conversation")
    max_request_bytes: int = Field(4_000_000, gt=0, description="HTTP transports: one MCP request body")
    max_response_bytes: int = Field(8_000_000, gt=0, description="one upstream reply")
    call_timeout_s: float = Field(300.0, gt=0, description="a whole complete call, fallbacks and waits included")
    max_file_bytes: int = Field(10_000_000, gt=0, description="one file or image a call brings")
    max_attachments: int = Field(10, ge=0, description="files and images in one call")
    max_attachment_bytes: int = Field(20_000_000, gt=0, description="all files and images of one call together")
    max_stored_attachment_bytes: int = Field(
        1_000_000_000, gt=0, description="files and images kept in the state store (each stored once)"
    )


class _BudgetFields(_Strict):
    rpm: int | None = Field(None, gt=0, description="client-side budget: requests per minute per key")
    tpm: int | None = Field(None, gt=0, description="client-side budget: tokens (in + out) per minute per key")
    rpd: int | None = Field(None, gt=0, description="client-side budget: requests per day per key")
    tpd: int | None = Field(None, gt=0, description="client-side budget: tokens (in + out) per day per key")

    def budget(self, default: Budget = NO_BUDGET) -> Budget:
        """These limits, each falling back to `default`'s where not given."""
        return Budget(
            self.rpm if self.rpm is not None else default.rpm,
            self.tpm if self.tpm is not None else default.tpm,
            self.rpd if self.rpd is not None else default.rpd,
            self.tpd if self.tpd is not None else default.tpd,
        )


class KeyEntry(_BudgetFields):
    """A key with its own budget: `{ key = "${OPENAI_KEY_2}", rpm = 500 }`."""

    key: str


class ProviderConfig(_BudgetFields):
    type: ProviderType = "openai"
    base_url: str | None = None
    api_version: str | None = Field(None, description="Azure: use the deployment path with this api-version")
    keys: list[str | KeyEntry] = Field(default_factory=list)
    strategy: Literal["balanced", "priority", "round_robin"] = "balanced"
    timeout_s: float = Field(60.0, gt=0, description="one attempt, first byte to last")
    connect_timeout_s: float = Field(10.0, gt=0)
    cooldown_s: float = Field(60.0, ge=0, description="cooldown when the provider names no wait")
    max_cooldown_s: float = Field(3600.0, gt=0, description="cap on any rate-limit cooldown")
    quota_cooldown_s: float = Field(6 * 3600.0, gt=0, description="how long an out-of-quota key is parked")
    headers: dict[str, str] = Field(default_factory=dict)
    stream: bool = Field(True, description="stream from upstream: earlier progress, and cut streams are caught")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {value[:60]!r})")
        if value is not None and "@" in urlsplit(value).netloc:  # not echoed: it holds a credential
            raise ValueError(
                "must not hold a user name or password (user:pass@host): the API key goes in `keys`, "
                "a proxy's credential in `headers` (e.g. Proxy-Authorization)"
            )
        return value

    @model_validator(mode="after")
    def _needs_base_url(self) -> ProviderConfig:
        if self.base_url is None and PROVIDER_TYPES[self.type].base_url is None:
            raise ValueError(f"base_url is required for type {self.type!r} (e.g. https://RESOURCE.openai.azure.com)")
        return self

    @property
    def wire(self) -> str:
        return PROVIDER_TYPES[self.type].wire

    def resolved_base_url(self) -> str:
        return (self.base_url or PROVIDER_TYPES[self.type].base_url or "").rstrip("/")


class PriceConfig(_Strict):
    """A model's price in US dollars per million tokens (overrides the bundled price table)."""

    input_per_mtok: float = Field(ge=0, description="US dollars per million input tokens")
    output_per_mtok: float = Field(ge=0, description="US dollars per million output tokens")


class ModelConfig(_Strict):
    provider: str
    model: str | None = None
    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    price: PriceConfig | None = Field(None, description="private deployments: what a million tokens cost")
    modalities: list[Literal["text", "image", "pdf"]] | None = Field(
        None, description="what the model takes besides text (default: known from the model's name)"
    )


BUILTIN_TOOLS = frozenset(
    {"complete", "list_models", "key_status", "list_conversations", "get_conversation", "reset_key", "usage"}
)
_TOOL_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"


class PresetParameter(_Strict):
    """One typed parameter of a preset: `{ type = "str", default = "English", description = "…" }`,
    or the shorthand string `'str = "English"'`."""

    type: Literal["str", "int", "float", "bool"] = "str"
    default: str | int | float | bool | None = None
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        return parse_shorthand(data) if isinstance(data, str) else data

    @model_validator(mode="after")
    def _default_fits(self) -> PresetParameter:
        if self.default is not None:
            check_default(self.default, self.type)
        return self

    @property
    def python_type(self) -> builtins.type:
        return TYPES[self.type]


class PresetConfig(_Strict):
    """A model and a prompt wrapped into a named tool (and an MCP prompt)."""

    description: str = Field(min_length=1, description="what the tool does, shown to agents")
    system: str | None = Field(None, description="system prompt")
    template: str = Field(min_length=1, description="the user message, with {parameter} placeholders")
    parameters: dict[str, PresetParameter] = Field(default_factory=dict)
    route: str = Field("default", description="a route or model name")
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    response_schema: dict[str, Any] | None = Field(
        None, description="the answer must be JSON fitting this JSON Schema (a table, or a JSON string)"
    )
    files: bool = Field(False, description="the tool takes `files` (text, PDF, images)")
    images: bool = Field(False, description="the tool takes `images`")

    @field_validator("response_schema", mode="before")
    @classmethod
    def _json_schema(cls, value: object) -> object:
        from .structured import checked_schema

        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not JSON ({exc})") from None
        return None if value is None else checked_schema(value, "a JSON Schema")

    @field_validator("template")
    @classmethod
    def _well_formed(cls, template: str) -> str:
        placeholders(template)
        return template


class PolicyConfig(_BudgetFields):
    """What the callers with these token names may use, and how much (per token, across instances)."""

    tokens: list[str] = Field(min_length=1, description="token names from [server] auth_tokens")
    routes: list[str] | None = Field(None, description="routes allowed (None: all)")
    models: list[str] | None = Field(None, description="models allowed by name (None: all)")
    presets: list[str] | None = Field(None, description="preset tools allowed (None: all)")
    usd_per_day: float | None = Field(None, gt=0, description="money budget per token, UTC day (US dollars)")
    usd_per_month: float | None = Field(None, gt=0, description="money budget per token, UTC calendar month")
    sampling: bool = Field(False, description="may a call fall back to the caller's own model ([sampling])")


class SamplingConfig(_Strict):
    """The client's own model (MCP sampling) as the last resort of the routes listed here."""

    routes: list[str] = Field(default_factory=list, description="routes (or models) that may ask the client's model")
    max_tokens: int = Field(1024, gt=0, description="answer length asked of the client's model when a call sets none")
    timeout_s: float = Field(120.0, gt=0, description="how long the client's model may take (a person may approve it)")


class TracingConfig(_Strict):
    """OpenTelemetry export (needs `mcp-keygate[otel]`)."""

    enabled: bool = Field(False, description="export using the standard OTEL_EXPORTER_OTLP_* variables")
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces")
    service_name: str = Field("mcp-keygate", description="service.name of the spans")


class Config(_Strict):
    state: StateConfig = Field(default_factory=StateConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routes: dict[str, list[str]] = Field(default_factory=dict)
    presets: dict[str, PresetConfig] = Field(default_factory=dict)
    policies: dict[str, PolicyConfig] = Field(default_factory=dict)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        problems: list[str] = []
        for name, model in self.models.items():
            if model.provider not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none defined"
                problems.append(f"models.{name}.provider: unknown provider {model.provider!r} (known: {known})")
        for route, chain in self.routes.items():
            if not chain:
                problems.append(f"routes.{route}: must list at least one model")
            if route in self.models and chain != [route]:
                problems.append(f"routes.{route}: a route may not share its name with a model")
            for i, name in enumerate(chain):
                if name not in self.models:
                    known = ", ".join(sorted(self.models)) or "none defined"
                    problems.append(f"routes.{route}[{i}]: unknown model {name!r} (known: {known})")
        for i, name in enumerate(self.sampling.routes):
            if self.route(name) is None:
                known = ", ".join(sorted(set(self.route_names()) | set(self.models))) or "none defined"
                problems.append(f"sampling.routes[{i}]: unknown route or model {name!r} (known: {known})")
        problems += self._preset_problems() + self._policy_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _preset_problems(self) -> list[str]:
        problems = []
        callable_names = sorted(set(self.route_names()) | set(self.models))
        for name, preset in self.presets.items():
            where = f"presets.{name}"
            if not re.match(_TOOL_NAME, name):
                problems.append(f"{where}: the name becomes a tool name: letters, digits, _ and - (max 64)")
            if name in BUILTIN_TOOLS:
                problems.append(f"{where}: {name!r} is a built-in tool; choose another name")
            if self.route(preset.route) is None:
                problems.append(
                    f"{where}.route: unknown route or model {preset.route!r} (known: {', '.join(callable_names)})"
                )
            used = placeholders(preset.template)
            for placeholder in dict.fromkeys(used):
                if placeholder not in preset.parameters:
                    problems.append(
                        f"{where}.template: placeholder {{{placeholder}}} is not a declared parameter "
                        f"(add it to presets.{name}.parameters)"
                    )
            for parameter in preset.parameters:
                if parameter not in used:
                    problems.append(f"{where}.parameters.{parameter}: not used in the template")
                if parameter in ("conversation_id", "max_wait_s", "files", "images"):
                    problems.append(f"{where}.parameters.{parameter}: reserved (every preset tool has it)")
        return problems

    def _policy_problems(self) -> list[str]:
        problems = token_name_problems(list(self.server.auth_tokens), "server.auth_tokens")
        owners: dict[str, str] = {}
        for name, policy in self.policies.items():
            where = f"policies.{name}"
            problems += token_name_problems(policy.tokens, f"{where}.tokens")
            for token in policy.tokens:
                if token in owners:
                    problems.append(f"{where}.tokens: {token!r} is already governed by policies.{owners[token]}")
                owners[token] = name
            for field, known in (
                ("routes", set(self.route_names())),
                ("models", set(self.models)),
                ("presets", set(self.presets)),
            ):
                for i, item in enumerate(getattr(policy, field) or []):
                    if item not in known:
                        shown = ", ".join(sorted(known)) or "none defined"
                        problems.append(f"{where}.{field}[{i}]: unknown {field[:-1]} {item!r} (known: {shown})")
        return problems

    def _money_warnings(self) -> list[str]:
        return _money_warnings_for(self)

    def upstream_model(self, name: str) -> str:
        return self.models[name].model or name

    def route(self, name: str) -> list[str] | None:
        """The fallback chain for a route or model name; None when neither exists."""
        if name in self.routes:
            return list(self.routes[name])
        if name in self.models:
            return [name]
        if name == "default" and self.models:
            return list(self.models)
        return None

    def route_names(self) -> dict[str, list[str]]:
        routes = dict(self.routes)
        if "default" not in routes and self.models:
            routes["default"] = list(self.models)
        return routes

    def resolve_keys(self, env: Mapping[str, str] | None = None) -> dict[str, list[ApiKey]]:
        """Expand `${VAR}` references (a comma-separated value gives several keys)."""
        env = os.environ if env is None else env
        problems: list[str] = []
        resolved: dict[str, list[ApiKey]] = {}
        for pname, provider in self.providers.items():
            secrets: list[str] = []
            budgets: dict[str, Budget] = {}
            for i, entry in enumerate(provider.keys):
                ref = entry if isinstance(entry, str) else entry.key
                missing = [v for v in _ENV_REF.findall(ref) if not _is_set(env, v)]
                if missing:
                    problems.append(f"providers.{pname}.keys[{i}]: {_not_set(env, missing[0])}")
                    continue
                value = _ENV_REF.sub(lambda m: env[m.group(1)], ref)
                found = [s.strip() for s in value.split(",") if s.strip()]
                secrets.extend(found)
                if isinstance(entry, KeyEntry):
                    budgets.update(dict.fromkeys(found, entry.budget(provider.budget())))
            if not secrets and not PROVIDER_TYPES[provider.type].key_required:
                secrets = [""]  # keyless (Ollama): one pseudo-key so the pool has something to lease
            default = provider.budget()
            resolved[pname] = keys_for(pname, secrets, {s: budgets.get(s, default) for s in secrets})
        if problems:
            raise ConfigError(problems)
        return resolved

    def resolve_tokens(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Named bearer tokens: `[server] auth_tokens`, `KEYGATE_AUTH_TOKEN` ("default") and
        `KEYGATE_AUTH_TOKENS` ("name:token,name:token")."""
        env = os.environ if env is None else env
        problems: list[str] = []
        tokens: dict[str, str] = {}
        for name, ref in self.server.auth_tokens.items():
            missing = [v for v in _ENV_REF.findall(ref) if not _is_set(env, v)]
            if missing:
                problems.append(f"server.auth_tokens.{name}: {_not_set(env, missing[0])}")
                continue
            tokens[name] = _ENV_REF.sub(lambda m: env[m.group(1)], ref)
        if env.get("KEYGATE_AUTH_TOKEN"):
            tokens["default"] = env["KEYGATE_AUTH_TOKEN"]
        for i, pair in enumerate(p.strip() for p in (env.get("KEYGATE_AUTH_TOKENS") or "").split(",") if p.strip()):
            name, sep, token = pair.partition(":")
            if not sep or not name.strip() or len(token.strip()) < 16:
                problems.append(f"KEYGATE_AUTH_TOKENS[{i}]: expected name:token with a token of at least 16 characters")
                continue
            tokens[name.strip()] = token.strip()
        problems += token_name_problems(
            [n for n in tokens if n not in self.server.auth_tokens and n != "default"], "KEYGATE_AUTH_TOKENS"
        )
        short = [name for name, token in tokens.items() if len(token) < 16]
        problems += [f"auth token {name!r}: must be at least 16 characters" for name in short]
        if problems:
            raise ConfigError(problems)
        return tokens

    def policy_token_problems(self, token_names: set[str]) -> list[str]:
        """Policies naming a token that does not exist: a typo there would leave the real token
        ungoverned (and so an operator)."""
        problems = []
        for name, policy in self.policies.items():
            for token in policy.tokens:
                if token not in token_names:
                    known = ", ".join(sorted(token_names)) or "none"
                    problems.append(
                        f"policies.{name}.tokens: {token!r} is not a configured token (known: {known}); "
                        "a misspelt name would leave the real token unrestricted"
                    )
        return problems

    def warnings(self) -> list[str]:
        """Things that work but should not be left as they are."""
        found: list[str] = []
        for pname, provider in self.providers.items():
            for i, entry in enumerate(provider.keys):
                ref = entry if isinstance(entry, str) else entry.key
                if not _ENV_REF.search(ref):
                    found.append(
                        f"providers.{pname}.keys[{i}]: a literal key is written in the config file; "
                        f'use an environment variable reference such as "${{{pname.upper()}_API_KEY}}"'
                    )
            if not provider.keys and PROVIDER_TYPES[provider.type].key_required:
                found.append(f"providers.{pname}.keys: no keys listed; calls to this provider will fail")
        if not self.models:
            found.append("models: no models defined; `complete` has nothing to call")
        found += self._money_warnings()
        for name, policy in self.policies.items():
            for token in policy.tokens:
                if self.server.auth_tokens and token not in self.server.auth_tokens:
                    found.append(
                        f"policies.{name}.tokens: {token!r} is not in [server] auth_tokens "
                        "(fine if it comes from KEYGATE_AUTH_TOKENS)"
                    )
        return found


def _money_warnings_for(config: Config) -> list[str]:
    """Policies with a money budget that reach a model whose price is unknown (its calls cost nothing
    against the budget, since there is nothing to count)."""
    from .policies import TokenPolicy
    from .pricing import Prices

    found = []
    prices = Prices(config)
    for name, rules in config.policies.items():
        if rules.usd_per_day is None and rules.usd_per_month is None:
            continue
        unpriced = prices.unpriced(TokenPolicy(name, rules, rules.budget()).models(config))
        if unpriced:
            found.append(
                f"policies.{name}: has a money budget but reaches models with no known price ({', '.join(unpriced)}); "
                "their calls are not counted against it — add [models.NAME] price, or keep them out of its routes"
            )
    return found


def _format_validation_error(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in item["loc"]).replace(".[", "[")
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling against the config reference)"
            suggestion = _closest_field(item["loc"])
            if suggestion:
                msg = f"unknown field; did you mean {suggestion!r}?"
        elif "input" in item and item["type"] not in ("missing", "value_error") and not isinstance(item["input"], dict):
            msg = f"{msg} (got {item['input']!r})"
        if item["type"] == "value_error" and not loc:
            problems.extend(msg.split("; "))
        else:
            problems.append(f"{loc}: {msg}" if loc else msg)
    return problems


def _closest_field(loc: tuple[int | str, ...]) -> str | None:
    """The field name a misspelt one (`kyes`, `[provider.openai]`) most likely meant."""
    model: Any = Config
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if fields is not None and part in fields:
            model = fields[part].annotation
        model = _model_inside(model)
    fields = getattr(model, "model_fields", None)
    if not fields:
        return None
    found = difflib.get_close_matches(str(loc[-1]), list(fields), n=1, cutoff=0.6)
    return found[0] if found else None


def _model_inside(annotation: Any) -> Any:
    """The pydantic model an annotation holds (through dict values, lists and optionals), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(getattr(annotation, "__args__", ())):
        inner = _model_inside(arg)
        if inner is not None:
            return inner
    return annotation


def parse_config(data: dict, source: str = "config", env: Mapping[str, str] | None = None) -> Config:
    expanded, problems = expand_env_refs(data, os.environ if env is None else env)
    if problems:
        raise ConfigError(problems, source)
    try:
        return Config.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc), source) from None


# Secrets are expanded only where they are used (so the parsed config never holds one).
_EXPANDED_LATER = (("providers", "*", "keys"), ("server", "auth_tokens"))


def expand_env_refs(data: object, env: Mapping[str, str], path: tuple[str, ...] = ()) -> tuple[object, list[str]]:
    """`${VAR}` in every string of the config, replaced by the variable's value; keys and tokens are
    left for `resolve_keys`/`resolve_tokens`. A variable that is not set is a problem naming the field."""
    if isinstance(data, dict):
        out: dict[str, object] = {}
        problems: list[str] = []
        for name, value in data.items():
            out[name], found = expand_env_refs(value, env, (*path, str(name)))
            problems += found
        return out, problems
    if isinstance(data, list):
        items = [expand_env_refs(value, env, (*path, f"[{i}]")) for i, value in enumerate(data)]
        return [v for v, _ in items], [p for _, found in items for p in found]
    if not isinstance(data, str) or "${" not in data or _later(path):
        return data, []
    missing = [name for name in _ENV_REF.findall(data) if not _is_set(env, name)]
    if missing:
        where = ".".join(path).replace(".[", "[")
        return data, [f"{where}: {_not_set(env, missing[0], 'or write the value')}"]
    return _ENV_REF.sub(lambda m: env[m.group(1)], data), []


# What `mcp-keygate install` writes into a client's env block until the user fills it in.
_PLACEHOLDER = re.compile(r"^<set [A-Za-z_][A-Za-z0-9_]*>$")


def _is_set(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name)
    return bool(value) and not _PLACEHOLDER.match(value or "")


def _not_set(env: Mapping[str, str], name: str, otherwise: str = "or remove the reference") -> str:
    if _PLACEHOLDER.match(env.get(name) or ""):
        return (
            f"environment variable {name} still holds the placeholder {env[name]!r} that install wrote: "
            "put the real value in the client's env block"
        )
    return f"environment variable {name} is not set (export it, {otherwise})"


def _later(path: tuple[str, ...]) -> bool:
    return any(
        len(path) >= len(pattern) and all(p in ("*", part) for p, part in zip(pattern, path, strict=False))
        for pattern in _EXPANDED_LATER
    )


def load_config_file(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"], str(path)) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"], str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"], str(path)) from None
    return parse_config(data, str(path), env)


def config_from_env(env: Mapping[str, str] | None = None) -> Config:
    """Build a config from `OPENAI_API_KEY(S)`, `ANTHROPIC_API_KEY(S)`, `GEMINI_API_KEY(S)`… for users without a file.

    The default route takes each provider's preferred model first, then the others.
    """
    env = os.environ if env is None else env
    data: dict = {"providers": {}, "models": {}, "routes": {}}
    first: list[str] = []
    rest: list[str] = []
    for name, preset in PROVIDER_TYPES.items():
        if preset.env_prefix is None:
            continue
        names = (f"{preset.env_prefix}_API_KEYS", f"{preset.env_prefix}_API_KEY", *preset.extra_env_keys)
        refs = [f"${{{var}}}" for var in names if env.get(var)]
        if not refs:
            continue
        provider: dict = {"type": name, "keys": refs}
        if env.get(f"{preset.env_prefix}_BASE_URL"):
            provider["base_url"] = env[f"{preset.env_prefix}_BASE_URL"]
        data["providers"][name] = provider
        for i, (model, window) in enumerate(preset.default_models):
            if model in data["models"]:
                continue
            data["models"][model] = {"provider": name, **({"context_window": window} if window else {})}
            (first if i == 0 else rest).append(model)
    if first:
        data["routes"]["default"] = first + rest
    return parse_config(data, "environment")


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """`--config`, else `KEYGATE_CONFIG`, else zero-config from the environment."""
    env = os.environ if env is None else env
    chosen = path or env.get("KEYGATE_CONFIG")
    return load_config_file(chosen, env) if chosen else config_from_env(env)


def default_state_path(env: Mapping[str, str] | None = None) -> Path:
    """A per-user state directory, following each platform's convention."""
    env = os.environ if env is None else env
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(env.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "mcp-keygate" / "state.db"


def state_path(config: Config, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("KEYGATE_STATE"):
        return Path(env["KEYGATE_STATE"]).expanduser()
    if config.state.path:
        return Path(config.state.path).expanduser()
    return default_state_path(env)
