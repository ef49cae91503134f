"""Anthropic Messages API: `POST {base}/v1/messages`, `x-api-key` + `anthropic-version`."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

import httpx2

from ..keys.secret import ApiKey
from ..messages import Completion, Message, Usage
from ..outcomes import Headroom, Outcome, Verdict, parse_retry_after_headers
from ..resets import regain_access_wait, seconds_to_next_month_utc
from ..structured import TOOL_NAME, anthropic_tool, from_tool_input
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
from .parts import anthropic_content
from .turns import alternating, split_system

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
_CREDIT = re.compile(
    r"credit balance is too low|spend limit|billing|reached your specified API usage limits|regain access on", re.I
)
_TOO_LONG = re.compile(r"prompt is too long|too many tokens|context window", re.I)


class AnthropicProvider:
    def __init__(self, name: str, base_url: str, extra_headers: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.extra_headers = dict(extra_headers or {})
        self._urls = ParsedUrls()

    def build_request(
        self, client: httpx2.AsyncClient, key: ApiKey, model: str, messages: list[Message], params: CallParams
    ) -> httpx2.Request:
        system, rest = split_system(messages)
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": params.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [{"role": m.role, "content": anthropic_content(m)} for m in alternating(rest)],
        }
        if system:
            body["system"] = system
        if params.temperature is not None:
            body["temperature"] = min(params.temperature, 1.0)  # Anthropic's range is 0–1
        if params.response_schema is not None:  # structured: the answer is the input of one forced tool
            body["tools"] = [anthropic_tool(params.response_schema)]
            body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        if params.stream:
            body["stream"] = True
        headers = {"anthropic-version": API_VERSION, **self.extra_headers}
        if key.secret:
            headers["x-api-key"] = key.secret
        return client.build_request("POST", self._urls(f"{self.base_url}/v1/messages"), json=body, headers=headers)

    def parse_response(self, body: Any, schema: dict[str, Any] | None = None) -> Completion:
        try:
            blocks = body["content"]
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            tools = [b.get("input") for b in blocks if b.get("type") == "tool_use" and b.get("name") == TOOL_NAME]
            stop = body.get("stop_reason") or "end_turn"
            usage = body.get("usage") or {}
        except (KeyError, TypeError, AttributeError):
            raise MalformedResponse("no content[] in the reply") from None
        if tools and schema is not None:
            text, stop = from_tool_input(tools[0], schema), "end_turn" if stop == "tool_use" else stop
        return Completion(text, STOP_REASONS.get(stop, stop), _usage(usage), str(body.get("model") or ""))

    def stream_decoder(self, schema: dict[str, Any] | None = None) -> AnthropicStream:
        return AnthropicStream(schema)

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> Verdict:
        return classify_anthropic_error(status, headers, body)

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        remaining = header_int(headers.get("anthropic-ratelimit-requests-remaining"))
        tokens = header_int(headers.get("anthropic-ratelimit-tokens-remaining"))
        if remaining is None and tokens is None:
            return None
        return Headroom(
            limit_requests=header_int(headers.get("anthropic-ratelimit-requests-limit")),
            remaining_requests=remaining,
            reset_requests_s=_seconds_until(headers.get("anthropic-ratelimit-requests-reset")),
            remaining_tokens=tokens,
            reset_tokens_s=_seconds_until(headers.get("anthropic-ratelimit-tokens-reset")),
        )


def _usage(usage: Mapping[str, Any]) -> Usage:
    prompt = sum(
        int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Usage(prompt, int(usage.get("output_tokens") or 0))


class AnthropicStream(TextStream):
    """message_start … content_block_delta … message_delta … message_stop; `error` events fail the attempt."""

    end_marker = "message_stop"

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.schema = schema
        self.tool_json: list[str] = []  # the forced tool's input, as streamed (input_json_delta)
        self.stop: str | None = None
        self.input_usage: Mapping[str, Any] = {}
        self.output_tokens = 0

    def feed(self, event: str | None, data: str) -> str:
        payload = sse_json(data)
        if not isinstance(payload, dict):
            raise MalformedResponse("a stream event is not an object")
        kind = payload.get("type") or event
        if kind == "error":
            raise StreamFailed(classify_anthropic_error(_status_for(payload), {}, payload))
        if kind == "message_start":
            message = payload.get("message") or {}
            self.model = message.get("model") or ""
            self.input_usage = message.get("usage") or {}
        elif kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                self.parts.append(delta["text"])
                return delta["text"]
            if delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
                self.tool_json.append(delta["partial_json"])
                return delta["partial_json"]
        elif kind == "message_delta":
            self.stop = (payload.get("delta") or {}).get("stop_reason") or self.stop
            self.output_tokens = int((payload.get("usage") or {}).get("output_tokens") or self.output_tokens)
        elif kind == "message_stop":
            stop = self.stop or "end_turn"
            if self.tool_json and self.schema is not None:
                raw = "".join(self.tool_json)
                try:
                    self.parts = [from_tool_input(json.loads(raw), self.schema)]
                except ValueError:  # cut short (max_tokens): left as it came, so it fails the schema check
                    self.parts = [raw]
                stop = "end_turn" if stop == "tool_use" else stop
            self.finish_reason = STOP_REASONS.get(stop, stop)
            self.usage = _usage({**self.input_usage, "output_tokens": self.output_tokens})
        return ""


_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _status_for(payload: Mapping[str, Any]) -> int:
    error = payload.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    return _ERROR_STATUS.get(kind, 500) if isinstance(kind, str) else 500


def classify_anthropic_error(status: int, headers: Mapping[str, str], body: Any) -> Verdict:
    """Map an Anthropic error reply (or stream `error` event) to an Outcome, per the reference."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    kind = error.get("type")
    message = str(error.get("message") or "")
    found = error.get("details")
    details: dict[str, Any] = found if isinstance(found, dict) else {}
    reason = short_reason(status, kind, message)
    wait = parse_retry_after_headers(headers)

    if status == 429 or kind == "rate_limit_error":
        if details.get("error_code") == "enforced_spend_limit_reached" or (wait is None and _CREDIT.search(message)):
            return Verdict(Outcome.QUOTA_EXHAUSTED, status, _spend_limit_wait(message), reason)
        return Verdict(Outcome.RATE_LIMITED, status, wait, reason)
    if status == 402 or kind == "billing_error":
        return Verdict(Outcome.QUOTA_EXHAUSTED, status, None, reason)
    if status == 401 or status == 403 or kind in ("authentication_error", "permission_error"):
        return Verdict(Outcome.AUTH_FAILED, status, None, reason)
    if status == 404 or kind == "not_found_error":
        return Verdict(Outcome.MODEL_NOT_FOUND, status, None, reason)
    if kind == "invalid_request_error" or status == 400:
        if _CREDIT.search(message):
            # A spend limit says when it lifts ("regain access on 2026-12-01 at 00:00 UTC"); a credit
            # balance does not, so the pool's quota cooldown applies.
            spend = regain_access_wait(message) if "regain access" in message.lower() else None
            if spend is None and "usage limits" in message.lower():
                spend = seconds_to_next_month_utc()
            return Verdict(Outcome.QUOTA_EXHAUSTED, status, spend, reason)
        if _TOO_LONG.search(message):
            return Verdict(Outcome.CONTEXT_TOO_LONG, status, None, reason)
        return Verdict(Outcome.BAD_REQUEST, status, None, reason)
    if status == 413 or kind == "request_too_large":
        return Verdict(Outcome.CONTEXT_TOO_LONG, status, None, reason)
    if status in (529, 503) or kind == "overloaded_error":
        return Verdict(Outcome.OVERLOADED, status, wait, reason)
    if status in (408, 504) or kind == "timeout_error":
        return Verdict(Outcome.TIMEOUT, status, wait, reason)
    if status >= 500:
        return Verdict(Outcome.UPSTREAM_ERROR, status, wait, reason)
    return Verdict(Outcome.BAD_REQUEST, status, None, reason)


def _spend_limit_wait(message: str) -> float:
    """The date the message gives, else 00:00 UTC on the 1st (spend limits are monthly)."""
    return regain_access_wait(message) or seconds_to_next_month_utc()


def _seconds_until(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
