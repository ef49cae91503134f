"""OpenAI Chat Completions and every API that copies it (Groq, Mistral, DeepSeek, OpenRouter, Ollama…)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx2

from ..keys.secret import ApiKey
from ..messages import Completion, Message, Usage
from ..outcomes import LONG_WAIT_S, Headroom, Outcome, Verdict, parse_go_duration, retry_after_from
from ..resets import epoch_wait, seconds_to_utc_midnight
from ..structured import openai_format
from .base import (
    CallParams,
    MalformedResponse,
    ParsedUrls,
    StreamFailed,
    TextStream,
    header_int,
    short_reason,
    sse_json,
)
from .parts import openai_content
from .turns import alternating, split_system

QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
    }
)
_CONTEXT_PHRASES = re.compile(
    r"maximum context length|context_length_exceeded|context window|too many tokens|reduce the length", re.I
)
_PER_DAY = re.compile(r"per day|\(TPD\)|\(RPD\)|free-models-per-day|daily", re.I)
_OPENROUTER_DAY = re.compile(r"free-models-per-day", re.I)
# OpenAI's (and Azure's) old capacity answer: a 429 that is about the model, not the key.
_CAPACITY = re.compile(r"model is currently overloaded|currently experiencing high demand", re.I)


def error_fields(body: Any) -> tuple[str | None, str | None, str]:
    """(type, code, message) from OpenAI's envelope and its look-alikes (Mistral, OpenRouter, Azure)."""
    if not isinstance(body, dict):
        return None, None, ""
    error = body.get("error", body)
    if isinstance(error, str):
        return None, None, error
    if not isinstance(error, dict):
        return None, None, ""
    code = error.get("code")
    kind = error.get("type")
    message = error.get("message")
    return (
        str(kind) if kind is not None else None,
        str(code) if code is not None else None,
        str(message) if message is not None else "",
    )


class OpenAIProvider:
    """Chat Completions over `POST {base_url}/chat/completions` with a Bearer key (Azure: `api-key`)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        azure_api_version: str | None = None,
        azure: bool = False,
        stream_options: bool = True,
        alternate_roles: bool = False,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.extra_headers = dict(extra_headers or {})
        self._urls = ParsedUrls()
        self.azure = azure or azure_api_version is not None
        self.azure_api_version = azure_api_version
        self.stream_options = stream_options
        self.alternate_roles = alternate_roles
        # api.openai.com wants max_completion_tokens (reasoning models reject max_tokens);
        # the compatible APIs mostly know only max_tokens.
        official = "api.openai.com" in self.base_url or self.azure
        self._max_tokens_field = "max_completion_tokens" if official else "max_tokens"

    def url_for(self, model: str) -> str:
        if not self.azure:
            return f"{self.base_url}/chat/completions"
        if self.azure_api_version:
            return f"{self.base_url}/openai/deployments/{model}/chat/completions?api-version={self.azure_api_version}"
        base = self.base_url if "/openai/" in self.base_url + "/" else f"{self.base_url}/openai/v1"
        return f"{base}/chat/completions"

    def build_request(
        self, client: httpx2.AsyncClient, key: ApiKey, model: str, messages: list[Message], params: CallParams
    ) -> httpx2.Request:
        if self.alternate_roles:  # Perplexity: system first, then strictly user/assistant in turn
            system, rest = split_system(messages)
            messages = [*([Message("system", system)] if system else []), *alternating(rest)]
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": openai_content(m)} for m in messages],
        }
        if params.max_tokens is not None:
            body[self._max_tokens_field] = params.max_tokens
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.response_schema is not None:
            body["response_format"] = openai_format(params.response_schema)
        if params.stream:
            body["stream"] = True
            if self.stream_options:
                body["stream_options"] = {"include_usage": True}
        headers = {**self.extra_headers}
        if key.secret:
            if self.azure:
                headers["api-key"] = key.secret
            else:
                headers["Authorization"] = f"Bearer {key.secret}"
        return client.build_request("POST", self._urls(self.url_for(model)), json=body, headers=headers)

    def parse_response(self, body: Any, schema: dict[str, Any] | None = None) -> Completion:
        try:
            choice = body["choices"][0]
            message = choice["message"]
            text = message.get("content")
            if text is None:
                text = message.get("refusal") or ""
            finish = choice.get("finish_reason") or "stop"
            usage = body.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            raise MalformedResponse("no choices[0].message in the reply") from None
        if not isinstance(text, str):
            raise MalformedResponse("choices[0].message.content is not text")
        return Completion(
            text=text,
            finish_reason=str(finish),
            usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            upstream_model=str(body.get("model") or ""),
        )

    def stream_decoder(self, schema: dict[str, Any] | None = None) -> OpenAIStream:
        return OpenAIStream()

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> Verdict:
        return classify_openai_error(status, headers, body)

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        return openai_headroom(headers)


class OpenAIStream(TextStream):
    """`data: {chat.completion.chunk}` … `data: [DONE]`; complete only once a finish_reason arrived."""

    end_marker = "finish_reason"

    def feed(self, event: str | None, data: str) -> str:
        if data.strip() == "[DONE]":
            return ""
        chunk = sse_json(data)
        if not isinstance(chunk, dict):
            raise MalformedResponse("a stream chunk is not an object")
        if "error" in chunk:
            code = chunk["error"].get("code") if isinstance(chunk["error"], dict) else None
            status = code if isinstance(code, int) else 500
            raise StreamFailed(classify_openai_error(status, {}, chunk))
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            usage = chunk["usage"]
            self.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        text = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if isinstance(piece, str):
                text += piece
            if choice.get("finish_reason") == "error":
                reason = "the provider ended the stream with an error"
                raise StreamFailed(Verdict(Outcome.UPSTREAM_ERROR, 200, reason=reason))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if text:
            self.parts.append(text)
        return text


def openai_headroom(headers: Mapping[str, str]) -> Headroom | None:
    """`x-ratelimit-{limit,remaining,reset}-*` (OpenAI, Azure, Groq — whose requests are per day)."""
    remaining = header_int(headers.get("x-ratelimit-remaining-requests"))
    tokens = header_int(headers.get("x-ratelimit-remaining-tokens"))
    if remaining is None and tokens is None:
        return None
    return Headroom(
        limit_requests=header_int(headers.get("x-ratelimit-limit-requests")),
        remaining_requests=remaining,
        reset_requests_s=parse_go_duration(headers.get("x-ratelimit-reset-requests") or ""),
        remaining_tokens=tokens,
        reset_tokens_s=parse_go_duration(headers.get("x-ratelimit-reset-tokens") or ""),
    )


def classify_openai_error(status: int, headers: Mapping[str, str], body: Any) -> Verdict:
    """Map an OpenAI-style error reply to an Outcome, following the provider reference."""
    kind, code, message = error_fields(body)
    reason = short_reason(status, code or kind, message)
    wait = retry_after_from(headers, message)
    if wait is None:
        wait = _metadata_wait(body)

    if status == 429:
        return _classify_429(headers, body, kind, code, message, reason, wait)
    if status == 402:
        # OpenRouter: 402 with Retry-After is an in-flight budget (wait); without it, out of credit.
        if wait is not None and "retry-after" in {h.lower() for h in headers}:
            return Verdict(Outcome.RATE_LIMITED, status, wait, reason)
        return Verdict(Outcome.QUOTA_EXHAUSTED, status, None, reason)
    if status in (401, 403):
        return Verdict(Outcome.AUTH_FAILED, status, None, reason)
    if status == 404 or code in ("model_not_found", "DeploymentNotFound"):
        return Verdict(Outcome.MODEL_NOT_FOUND, status, None, reason)
    if status == 413 or code == "context_length_exceeded" or (status == 400 and _CONTEXT_PHRASES.search(message)):
        return Verdict(Outcome.CONTEXT_TOO_LONG, status, None, reason)
    if status in (408, 504):
        return Verdict(Outcome.TIMEOUT, status, wait, reason)
    if status in (498, 503, 529) or code in ("server_is_overloaded", "slow_down"):
        return Verdict(Outcome.OVERLOADED, status, wait, reason)
    if status >= 500:
        return Verdict(Outcome.UPSTREAM_ERROR, status, wait, reason)
    return Verdict(Outcome.BAD_REQUEST, status, None, reason)


def _classify_429(
    headers: Mapping[str, str],
    body: Any,
    kind: str | None,
    code: str | None,
    message: str,
    reason: str,
    wait: float | None,
) -> Verdict:
    """A 429 is a rate limit, a quota, a request too large for the window, or the model's capacity."""
    if (code in QUOTA_CODES) or (kind in QUOTA_CODES):
        return Verdict(Outcome.QUOTA_EXHAUSTED, 429, None, reason)
    if "request too large" in message.lower():
        return Verdict(Outcome.CONTEXT_TOO_LONG, 429, None, reason)
    if kind == "server_error" or _CAPACITY.search(message):
        return Verdict(Outcome.OVERLOADED, 429, wait, reason)
    if _OPENROUTER_DAY.search(message):
        return Verdict(Outcome.QUOTA_EXHAUSTED, 429, _openrouter_day_reset(body), reason)
    if wait is None:
        wait = _reset_header_wait(headers)
    if _PER_DAY.search(message) or (wait is not None and wait >= LONG_WAIT_S):
        return Verdict(Outcome.QUOTA_EXHAUSTED, 429, wait, reason)
    return Verdict(Outcome.RATE_LIMITED, 429, wait, reason)


def _metadata(body: Any) -> dict[str, Any]:
    error = body.get("error") if isinstance(body, dict) else None
    found = error.get("metadata") if isinstance(error, dict) else None
    return found if isinstance(found, dict) else {}


def _metadata_wait(body: Any) -> float | None:
    """OpenRouter puts the upstream's wait in the body: `metadata.retry_after_seconds`."""
    value = _metadata(body).get("retry_after_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _openrouter_day_reset(body: Any) -> float:
    """OpenRouter's free-model day ends at `metadata.headers.X-RateLimit-Reset` (epoch ms), else 00:00 UTC."""
    quoted = _metadata(body).get("headers")
    stamp = quoted.get("X-RateLimit-Reset") if isinstance(quoted, dict) else None
    return (epoch_wait(stamp) if stamp is not None else None) or seconds_to_utc_midnight()


def _reset_header_wait(headers: Mapping[str, str]) -> float | None:
    """When a 429 names no wait, the exhausted window's reset header does."""
    waits = []
    for kind in ("requests", "tokens"):
        if headers.get(f"x-ratelimit-remaining-{kind}") == "0":
            reset = parse_go_duration(headers.get(f"x-ratelimit-reset-{kind}") or "")
            if reset is not None:
                waits.append(reset)
    return max(waits) if waits else None
