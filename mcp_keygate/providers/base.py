"""The Provider protocol and the one function that sends an attempt over HTTP.

A provider knows one wire format: how to build a request, read an answer (whole or streamed)
and classify a failure. It knows nothing of keys' states, routes or fallbacks.

A streamed answer counts only when the stream ends the way the API says a complete answer
ends (`[DONE]`/`finish_reason`, `message_stop`, a final `finishReason`): a stream that breaks or
reports an error midway is a failed attempt, never a truncated answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx2

from ..keys.secret import ApiKey, scrub
from ..messages import Completion, Message, Usage
from ..outcomes import Headroom, Outcome, Verdict

OnText = Callable[[str], Awaitable[None]]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class CallParams:
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one HTTP call to one key produced: a verdict, and the answer when it is OK."""

    verdict: Verdict
    completion: Completion | None = None
    headroom: Headroom | None = None


class MalformedResponse(Exception):
    """A 2xx reply that is not a complete answer in the API's shape."""


class StreamFailed(Exception):
    """The upstream reported an error in the middle of a stream."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


class TextStream:
    """What every stream decoder accumulates. The answer is complete only once the API's end marker
    has set `finish_reason`; until then `finish()` refuses, so a cut stream is never an answer."""

    end_marker = "finish reason"

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.model = ""

    def finish(self) -> Completion:
        if self.finish_reason is None:
            raise MalformedResponse(f"no {self.end_marker} before the stream ended")
        return Completion("".join(self.parts), self.finish_reason, self.usage, self.model)


class StreamDecoder(Protocol):
    def feed(self, event: str | None, data: str) -> str:
        """Take one SSE message; return the text it adds (may be ''); raise StreamFailed on an error."""

    def finish(self) -> Completion:
        """The complete answer; raise MalformedResponse when the stream did not end properly."""


class Provider(Protocol):
    name: str

    def build_request(
        self, client: httpx2.AsyncClient, key: ApiKey, model: str, messages: list[Message], params: CallParams
    ) -> httpx2.Request: ...

    def parse_response(self, body: Any) -> Completion:
        """Turn a 2xx JSON body into a Completion; raise MalformedResponse if it is not one."""

    def stream_decoder(self) -> StreamDecoder: ...

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> Verdict:
        """Classify a non-2xx reply."""

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        """Read the rate-limit headers of any reply."""


def short_reason(status: int | str, code: str | None, message: str) -> str:
    """One printable line for logs and `key_status`: status, code and the start of the message."""
    text = _CONTROL.sub(" ", message or "").strip()
    if len(text) > 200:
        text = text[:197] + "…"
    label = f"{status} {code}" if code else str(status)
    return f"{label}: {text}" if text else label


def header_int(value: str | None) -> int | None:
    """A numeric rate-limit header, or None when absent or garbled."""
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


class TooLarge(Exception):
    """The upstream sent more than the configured reply size."""


async def iter_sse(response: httpx2.Response, max_bytes: int) -> AsyncIterator[tuple[str | None, str]]:
    """Server-sent events as (event name, data); comments such as `: keep-alive` are skipped."""
    event: str | None = None
    data: list[str] = []
    size = 0
    async for line in response.aiter_lines():
        size += len(line) + 1
        if size > max_bytes:
            raise TooLarge(f"the stream exceeded {max_bytes} bytes")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)


async def send_attempt(
    provider: Provider,
    client: httpx2.AsyncClient,
    key: ApiKey,
    model: str,
    messages: list[Message],
    params: CallParams,
    on_text: OnText | None = None,
    *,
    deadline_s: float = 600.0,
    max_bytes: int = 8_000_000,
) -> Attempt:
    """Send one request and classify it; network failures become verdicts, never exceptions.

    `deadline_s` bounds the whole attempt (a slow drip that keeps each read under the read timeout
    still ends), and `max_bytes` the reply.
    """
    with anyio.move_on_after(deadline_s) as scope:
        attempt = await _send(provider, client, key, model, messages, params, on_text, max_bytes)
    if scope.cancelled_caught:
        return Attempt(Verdict(Outcome.TIMEOUT, reason=f"no complete answer within {deadline_s:g} s"))
    return attempt


async def _send(
    provider: Provider,
    client: httpx2.AsyncClient,
    key: ApiKey,
    model: str,
    messages: list[Message],
    params: CallParams,
    on_text: OnText | None,
    max_bytes: int,
) -> Attempt:
    secrets = [key.secret] if key.secret else []
    request = provider.build_request(client, key, model, messages, params)
    try:
        response = await client.send(request, stream=True)
    except httpx2.TimeoutException:
        return Attempt(Verdict(Outcome.TIMEOUT, reason="upstream timed out before answering"))
    except httpx2.TransportError as exc:
        return Attempt(Verdict(Outcome.UPSTREAM_ERROR, reason=f"network error: {type(exc).__name__}"))
    try:
        status = response.status_code
        headroom = provider.headroom(response.headers)
        streamed = params.stream and response.headers.get("content-type", "").startswith("text/event-stream")
        if 200 <= status < 300 and streamed:
            verdict, completion = await _read_stream(provider, response, on_text, max_bytes)
            return Attempt(_scrubbed(verdict, secrets), completion, headroom)
        try:
            raw = await _read_capped(response, max_bytes)
        except TooLarge as exc:
            return Attempt(Verdict(Outcome.UPSTREAM_ERROR, status, reason=str(exc)))
        except httpx2.TimeoutException:
            return Attempt(Verdict(Outcome.TIMEOUT, status, reason="upstream stalled while sending the body"))
        except httpx2.TransportError as exc:
            return Attempt(Verdict(Outcome.UPSTREAM_ERROR, status, reason=f"body cut off: {type(exc).__name__}"))
        body = decode_json(raw)
        if 200 <= status < 300:
            try:
                return Attempt(Verdict(Outcome.OK, status), provider.parse_response(body), headroom)
            except MalformedResponse as exc:
                return Attempt(Verdict(Outcome.UPSTREAM_ERROR, status, reason=f"malformed response: {exc}"))
        if 300 <= status < 400:
            # Redirects are never followed with a key attached.
            return Attempt(Verdict(Outcome.UPSTREAM_ERROR, status, reason=f"unexpected redirect ({status})"))
        return Attempt(_scrubbed(provider.classify(status, response.headers, body), secrets), None, headroom)
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()


async def _read_capped(response: httpx2.Response, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"the reply exceeded {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_stream(
    provider: Provider, response: httpx2.Response, on_text: OnText | None, max_bytes: int
) -> tuple[Verdict, Completion | None]:
    decoder = provider.stream_decoder()
    received = 0
    status = response.status_code
    try:
        async for event, data in iter_sse(response, max_bytes):
            text = decoder.feed(event, data)
            if text:
                received += len(text)
                if on_text is not None:
                    await on_text(text)
        return Verdict(Outcome.OK, status), decoder.finish()
    except StreamFailed as exc:
        return exc.verdict, None
    except TooLarge as exc:
        return Verdict(Outcome.UPSTREAM_ERROR, status, reason=str(exc)), None
    except MalformedResponse as exc:
        return Verdict(
            Outcome.UPSTREAM_ERROR, status, reason=f"stream ended early after {received} characters: {exc}"
        ), None
    except httpx2.TimeoutException:
        return Verdict(Outcome.TIMEOUT, status, reason=f"stream stalled after {received} characters"), None
    except httpx2.TransportError as exc:
        return Verdict(
            Outcome.UPSTREAM_ERROR, status, reason=f"stream broke after {received} characters: {type(exc).__name__}"
        ), None


def _scrubbed(verdict: Verdict, secrets: list[str]) -> Verdict:
    if not verdict.reason:
        return verdict
    return Verdict(verdict.outcome, verdict.status_code, verdict.retry_after_s, scrub(verdict.reason, secrets))


def sse_json(data: str) -> Any:
    """One SSE data payload as JSON; a payload that is not JSON means the stream is corrupt."""
    try:
        return json.loads(data)
    except ValueError:
        raise MalformedResponse(f"a stream event is not JSON: {data[:60]!r}") from None
