"""Gemini API: `POST {base}/v1beta/models/{model}:generateContent` with `x-goog-api-key`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx2

from ..keys.secret import ApiKey
from ..messages import Completion, Message, Usage
from ..outcomes import Headroom, Outcome, Verdict, parse_go_duration, parse_wait_phrase, retry_after_from
from ..resets import seconds_to_pacific_midnight
from ..structured import gemini_schema
from .base import CallParams, MalformedResponse, ParsedUrls, StreamFailed, TextStream, short_reason, sse_json
from .parts import gemini_parts
from .turns import alternating, split_system

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
    "OTHER": "stop",
    "LANGUAGE": "content_filter",
}
_TOO_LONG = re.compile(r"input token count.*exceeds|exceeds the maximum number of tokens|context", re.I)
_PER_DAY = re.compile(r"PerDay|Daily", re.I)
_NO_ALLOWANCE = re.compile(r"limit: 0\b")  # "Quota exceeded for metric: …, limit: 0, model: …"


class GeminiProvider:
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
            "contents": [
                {"role": "model" if m.role == "assistant" else "user", "parts": gemini_parts(m)}
                for m in alternating(rest)
            ]
        }
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        config: dict[str, Any] = {}
        if params.max_tokens is not None:
            config["maxOutputTokens"] = params.max_tokens
        if params.temperature is not None:
            config["temperature"] = params.temperature
        if params.response_schema is not None:
            config["responseMimeType"] = "application/json"
            config["responseSchema"] = gemini_schema(params.response_schema)
        if config:
            body["generationConfig"] = config
        method = "streamGenerateContent?alt=sse" if params.stream else "generateContent"
        url = f"{self.base_url}/v1beta/models/{model.removeprefix('models/')}:{method}"
        headers = {**self.extra_headers}
        if key.secret:
            headers["x-goog-api-key"] = key.secret
        return client.build_request("POST", self._urls(url), json=body, headers=headers)

    def parse_response(self, body: Any, schema: dict[str, Any] | None = None) -> Completion:
        if not isinstance(body, dict):
            raise MalformedResponse("the reply is not an object")
        text, finish = _candidate(body)
        if finish is None:
            blocked = (body.get("promptFeedback") or {}).get("blockReason")
            if blocked:
                return Completion("", "content_filter", _usage(body), str(body.get("modelVersion") or ""))
            raise MalformedResponse("no candidates[0] with a finishReason")
        return Completion(text, finish, _usage(body), str(body.get("modelVersion") or ""))

    def stream_decoder(self, schema: dict[str, Any] | None = None) -> GeminiStream:
        return GeminiStream()

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> Verdict:
        return classify_gemini_error(status, headers, body)

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        return None  # Gemini sends no rate-limit headers; waits come in error bodies


def _candidate(body: Mapping[str, Any]) -> tuple[str, str | None]:
    candidates = body.get("candidates") or []
    if not candidates or not isinstance(candidates[0], dict):
        return "", None
    first = candidates[0]
    parts = (first.get("content") or {}).get("parts") or []
    text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))
    reason = first.get("finishReason")
    return text, (FINISH_REASONS.get(reason, "stop") if reason else None)


def _usage(body: Mapping[str, Any]) -> Usage:
    meta = body.get("usageMetadata") or {}
    return Usage(int(meta.get("promptTokenCount") or 0), int(meta.get("candidatesTokenCount") or 0))


class GeminiStream(TextStream):
    """`data: {GenerateContentResponse}` frames; the last carries finishReason; `{"error": …}` fails it."""

    end_marker = "finishReason"

    def feed(self, event: str | None, data: str) -> str:
        frame = sse_json(data)
        if not isinstance(frame, dict):
            raise MalformedResponse("a stream frame is not an object")
        if "error" in frame:
            error = frame["error"] if isinstance(frame["error"], dict) else {}
            code = error.get("code")
            status = code if isinstance(code, int) else 500
            raise StreamFailed(classify_gemini_error(status, {}, frame))
        text, finish = _candidate(frame)
        if frame.get("usageMetadata"):
            self.usage = _usage(frame)
        self.model = frame.get("modelVersion") or self.model
        if finish is not None:
            self.finish_reason = finish
        if text:
            self.parts.append(text)
        return text


def _details(error: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    return [d for d in error.get("details") or [] if isinstance(d, dict) and str(d.get("@type", "")).endswith(kind)]


def classify_gemini_error(status: int, headers: Mapping[str, str], body: Any) -> Verdict:
    """Map a Gemini error reply to an Outcome; a 429's quotaId, not its retryDelay, says per-day vs per-minute."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = str(error.get("status") or "")
    message = str(error.get("message") or "")
    reason = short_reason(status, code or None, message)

    if status == 429 or code == "RESOURCE_EXHAUSTED":
        return _classify_quota(status, headers, error, message, reason)
    if status == 402:
        return Verdict(Outcome.QUOTA_EXHAUSTED, status, None, reason)
    reasons = {str(d.get("reason")) for d in _details(error, "ErrorInfo")}
    if "API_KEY_INVALID" in reasons or status == 401 or code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return Verdict(Outcome.AUTH_FAILED, status, None, reason)
    if status == 403:
        return Verdict(Outcome.AUTH_FAILED, status, None, reason)
    if status == 404 or code == "NOT_FOUND":
        return Verdict(Outcome.MODEL_NOT_FOUND, status, None, reason)
    if code == "FAILED_PRECONDITION":
        return Verdict(Outcome.QUOTA_EXHAUSTED, status, None, reason)  # billing is not enabled
    if status == 400 and _TOO_LONG.search(message):
        return Verdict(Outcome.CONTEXT_TOO_LONG, status, None, reason)
    if status == 503 or code == "UNAVAILABLE":
        return Verdict(Outcome.OVERLOADED, status, parse_wait_phrase(message), reason)
    if status == 504 or code == "DEADLINE_EXCEEDED":
        return Verdict(Outcome.TIMEOUT, status, None, reason)
    if status >= 500:
        return Verdict(Outcome.UPSTREAM_ERROR, status, None, reason)
    return Verdict(Outcome.BAD_REQUEST, status, None, reason)


def _classify_quota(
    status: int, headers: Mapping[str, str], error: Mapping[str, Any], message: str, reason: str
) -> Verdict:
    """Per day: parked until midnight Pacific. "limit: 0": this key's tier has no allowance for this
    model, so only this model is held until the daily reset. Otherwise the RetryInfo delay."""
    quota_ids = [str(v.get("quotaId", "")) for d in _details(error, "QuotaFailure") for v in d.get("violations") or []]
    if any(_PER_DAY.search(q) for q in quota_ids):
        return Verdict(Outcome.QUOTA_EXHAUSTED, status, seconds_to_pacific_midnight(), reason)
    if _NO_ALLOWANCE.search(message):
        return Verdict(Outcome.RATE_LIMITED, status, seconds_to_pacific_midnight(), reason, model_only=True)
    wait = None
    for info in _details(error, "RetryInfo"):
        wait = parse_go_duration(str(info.get("retryDelay") or ""))
    if wait is None:
        wait = retry_after_from(headers, message)
    if wait is None and any("PerMinute" in q for q in quota_ids):
        wait = 60.0
    return Verdict(Outcome.RATE_LIMITED, status, wait, reason)
