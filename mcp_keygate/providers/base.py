"""The Provider protocol and the one function that sends an attempt over HTTP.

A provider knows one wire format: how to build a request, read an answer and classify a
failure. It knows nothing of keys' states, routes or fallbacks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2

from ..keys.secret import ApiKey, scrub
from ..messages import Completion, Message
from ..outcomes import Outcome, Verdict


@dataclass(frozen=True, slots=True)
class CallParams:
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one HTTP call to one key produced: a verdict, and the answer when it is OK."""

    verdict: Verdict
    completion: Completion | None = None


class MalformedResponse(Exception):
    """A 2xx reply whose body is not the API's answer shape."""


class Provider(Protocol):
    name: str

    def build_request(
        self, client: httpx2.AsyncClient, key: ApiKey, model: str, messages: list[Message], params: CallParams
    ) -> httpx2.Request: ...

    def parse_response(self, body: Any) -> Completion:
        """Turn a 2xx JSON body into a Completion; raise MalformedResponse if it is not one."""

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> Verdict:
        """Classify a non-2xx reply."""


def decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


async def send_attempt(
    provider: Provider,
    client: httpx2.AsyncClient,
    key: ApiKey,
    model: str,
    messages: list[Message],
    params: CallParams,
) -> Attempt:
    """Send one request and classify it; network failures become verdicts, never exceptions."""
    request = provider.build_request(client, key, model, messages, params)
    try:
        response = await client.send(request)
    except httpx2.TimeoutException:
        return Attempt(Verdict(Outcome.TIMEOUT, reason="upstream timed out"))
    except httpx2.TransportError as exc:
        return Attempt(
            Verdict(Outcome.UPSTREAM_ERROR, reason=scrub(f"network error: {type(exc).__name__}", [key.secret]))
        )
    status = response.status_code
    body = decode_json(response.content)
    if 200 <= status < 300:
        try:
            completion = provider.parse_response(body)
        except MalformedResponse as exc:
            return Attempt(Verdict(Outcome.UPSTREAM_ERROR, status, reason=f"malformed response: {exc}"))
        return Attempt(Verdict(Outcome.OK, status), completion)
    if 300 <= status < 400:
        # Redirects are never followed with a key attached.
        return Attempt(Verdict(Outcome.UPSTREAM_ERROR, status, reason=f"unexpected redirect ({status})"))
    verdict = provider.classify(status, response.headers, body)
    return Attempt(
        Verdict(verdict.outcome, verdict.status_code, verdict.retry_after_s, scrub(verdict.reason, [key.secret]))
    )
