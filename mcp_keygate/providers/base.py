"""The Provider protocol and the one function that sends an attempt over HTTP.

A provider knows one wire format: how to build a request, read an answer (whole or streamed)
and classify a failure. It knows nothing of keys' states, routes or fallbacks.

A streamed answer counts only when the stream ends the way the API says a complete answer
ends (`[DONE]`/`finish_reason`, `message_stop`, a final `finishReason`): a stream that breaks or
reports an error midway is a failed attempt, never a truncated answer.
"""

from __future__ import annotations

import codecs
import json
import re
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio
import httpx2

from ..keys.secret import ApiKey, scrub
from ..messages import Completion, Message, Usage
from ..outcomes import Headroom, Outcome, Verdict
from ..text import one_line

OnText = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallParams:
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    response_schema: dict[str, Any] | None = None  # ask for JSON fitting this schema (structured.py)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one HTTP call to one key produced: a verdict, and the answer when it is OK."""

    verdict: Verdict
    completion: Completion | None = None
    headroom: Headroom | None = None


class ParsedUrls:
    """One provider's request URLs, each parsed once: a provider posts to the same few URLs, and
    parsing one cost more than building the rest of the request. Held by the provider, so a reload
    (new providers) drops them with it: a `base_url` may carry a credential of its own."""

    LIMIT = 256  # distinct URLs (one per configured model at most); past it, start again

    def __init__(self) -> None:
        self._parsed: dict[str, httpx2.URL] = {}

    def __call__(self, url: str) -> httpx2.URL:
        found = self._parsed.get(url)
        if found is None:
            if len(self._parsed) >= self.LIMIT:
                self._parsed.clear()
            found = self._parsed[url] = httpx2.URL(url)
        return found


class HeaderView(dict[str, str]):
    """A reply's headers read many times (rate limits, retry hints): looked up by lower-cased name in
    a dict, with repeated headers joined by ", " as `httpx2.Headers` does, at a fraction of its cost."""

    def __init__(self, headers: httpx2.Headers) -> None:
        super().__init__()
        for name, value in headers.multi_items():
            key = name.lower()
            previous = dict.get(self, key)
            self[key] = value if previous is None else f"{previous}, {value}"

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


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

    def parse_response(self, body: Any, schema: dict[str, Any] | None = None) -> Completion:
        """Turn a 2xx JSON body into a Completion; raise MalformedResponse if it is not one. `schema`:
        the call asked for a structured answer (Anthropic gives it as a tool's input)."""

    def stream_decoder(self, schema: dict[str, Any] | None = None) -> StreamDecoder: ...

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> Verdict:
        """Classify a non-2xx reply."""

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        """Read the rate-limit headers of any reply."""


def short_reason(status: int | str, code: str | None, message: str) -> str:
    """One printable line for logs and `key_status`: status, code and the start of the message
    (the upstream chose the code as freely as the message: it is cleaned and bounded the same way)."""
    text = one_line(message or "").strip()
    if len(text) > 200:
        text = text[:197] + "…"
    code = one_line(str(code)).strip()[:64] if code else ""
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


class BadBody(Exception):
    """A reply body we will not read: too large, or in an encoding we cannot (or will not) decode."""


class TooLarge(BadBody):
    """The upstream sent more than the configured reply size."""


# What we ask for and can inflate with a bounded output (brotli and zstd are not asked for: their
# Python bindings give no bound on one call's output).
ACCEPT_ENCODING = "gzip, deflate"
_PIECE = 64 * 1024  # the most one decompress call may produce
_EOL = re.compile(r"\r\n|\r|\n")


class _Inflater:
    """gzip or deflate, inflated in pieces of at most `_PIECE` bytes however dense the input."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._wbits = 31 if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._z = zlib.decompressobj(self._wbits)
        self._started = False
        self.dropped = 0  # bytes after the end of the compressed stream: ignored, not kept, but counted

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._z.eof:
            self.dropped += len(data)
        while data and not self._z.eof:
            try:
                out = self._z.decompress(data, _PIECE)
            except zlib.error as exc:
                if self._started or self._wbits != zlib.MAX_WBITS:
                    raise BadBody(f"the reply is not valid {self.encoding}: {exc}") from None
                self._wbits = -zlib.MAX_WBITS  # `deflate` without the zlib wrapper, as some servers send it
                self._z = zlib.decompressobj(self._wbits)
                continue
            self._started = True
            data = self._z.unconsumed_tail
            if out:
                yield out
            while len(out) == _PIECE and not data and not self._z.eof:  # output still pending inside zlib
                out = self._z.decompress(b"", _PIECE)
                if out:
                    yield out


def _inflater(response: httpx2.Response) -> _Inflater | None:
    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Inflater(codings[0])
    shown = one_line(response.headers["content-encoding"])[:40]
    raise BadBody(f"unsupported content-encoding {shown!r}")


async def decoded_body(response: httpx2.Response, max_bytes: int, what: str = "reply") -> AsyncIterator[bytes]:
    """The body, content-encoding removed, in pieces of at most one network chunk (or 64 KiB inflated).

    Decoded bytes are counted as they are produced, so `TooLarge` comes before more than `max_bytes`
    (plus one piece) of the reply is ever held, however dense a compressed body is.
    """
    inflater = _inflater(response)
    size = 0
    async for raw in response.aiter_raw():
        for piece in inflater.feed(raw) if inflater else (raw,):
            size += len(piece)
            if size > max_bytes:
                raise TooLarge(f"the {what} exceeded {max_bytes} bytes")
            yield piece
        if inflater is not None and size + inflater.dropped > max_bytes:
            raise TooLarge(f"the {what} exceeded {max_bytes} bytes")


class _LineSplitter:
    """UTF-8 text lines from byte pieces: CRLF, CR and LF each end a line (as SSE says), a character
    split across pieces is joined, and a leading BOM is dropped."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._partial: list[str] = []
        self._after_cr = False

    def feed(self, piece: bytes, final: bool = False) -> list[str]:
        text = self._text.decode(piece, final)
        split_crlf = self._after_cr and text.startswith("\n")  # the \n of a \r\n split across two pieces
        if text:
            self._after_cr = text.endswith("\r")
        if split_crlf:
            text = text[1:]
        parts = _EOL.split(text)
        lines: list[str] = []
        for part in parts[:-1]:
            lines.append("".join([*self._partial, part]))
            self._partial = []
        if parts[-1]:
            self._partial.append(parts[-1])
        if final and self._partial:
            lines.append("".join(self._partial))
            self._partial = []
        return lines


class SSEParser:
    """Server-sent events as (event name, data) from byte pieces; comments such as `: keep-alive` are
    skipped. Synchronous, so a network chunk of many events is parsed in one go."""

    def __init__(self) -> None:
        self._lines = _LineSplitter()
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, piece: bytes, final: bool = False) -> list[tuple[str | None, str]]:
        events: list[tuple[str | None, str]] = []
        for line in self._lines.feed(piece, final):
            if not line:
                if self._data:
                    events.append((self._event, "\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                self._event = value
            elif field == "data":
                self._data.append(value)
        if final and self._data:
            events.append((self._event, "\n".join(self._data)))
            self._event, self._data = None, []
        return events


async def iter_sse(response: httpx2.Response, max_bytes: int) -> AsyncIterator[tuple[str | None, str]]:
    """Server-sent events as (event name, data).

    Raises `BadBody` (`TooLarge`) once the stream, decoded, exceeds `max_bytes`: a line that never ends
    is cut off there, not buffered.
    """
    parser = SSEParser()
    async for piece in decoded_body(response, max_bytes, "stream"):
        for event in parser.feed(piece):
            yield event
    for event in parser.feed(b"", final=True):
        yield event


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
    # Custom headers may carry a credential too (a proxy's); an upstream may quote them back.
    extra: Mapping[str, str] = getattr(provider, "extra_headers", None) or {}
    secrets += [value for value in extra.values() if len(value) >= 8]
    request = provider.build_request(client, key, model, messages, params)
    request.headers["Accept-Encoding"] = ACCEPT_ENCODING  # only what `decoded_body` inflates within bounds
    try:
        response = await client.send(request, stream=True)
    except httpx2.TimeoutException:
        return Attempt(Verdict(Outcome.TIMEOUT, reason="upstream timed out before answering"))
    except (httpx2.ConnectError, httpx2.UnsupportedProtocol) as exc:
        return Attempt(Verdict(Outcome.UNREACHABLE, reason=scrub(cannot_connect(exc), secrets)))
    except httpx2.TransportError as exc:
        return Attempt(Verdict(Outcome.UPSTREAM_ERROR, reason=f"network error: {type(exc).__name__}"))
    try:
        status = response.status_code
        headers = HeaderView(response.headers)
        headroom = provider.headroom(headers)
        streamed = params.stream and headers.get("content-type", "").startswith("text/event-stream")
        if 200 <= status < 300 and streamed:
            verdict, completion = await _read_stream(provider, response, on_text, max_bytes, params.response_schema)
            return Attempt(_scrubbed(verdict, secrets), completion, headroom)
        try:
            raw = await _read_capped(response, max_bytes)
        except BadBody as exc:
            return Attempt(Verdict(Outcome.UPSTREAM_ERROR, status, reason=str(exc)))
        except httpx2.TimeoutException:
            return Attempt(Verdict(Outcome.TIMEOUT, status, reason="upstream stalled while sending the body"))
        except httpx2.TransportError as exc:
            return Attempt(Verdict(Outcome.UPSTREAM_ERROR, status, reason=f"body cut off: {type(exc).__name__}"))
        body = decode_json(raw)
        if 200 <= status < 300:
            try:
                completion = provider.parse_response(body, params.response_schema)
                return Attempt(Verdict(Outcome.OK, status), completion, headroom)
            except MalformedResponse as exc:
                return Attempt(Verdict(Outcome.UPSTREAM_ERROR, status, reason=f"malformed response: {exc}"))
        if 300 <= status < 400:
            # Redirects are never followed with a key attached.
            return Attempt(Verdict(Outcome.UPSTREAM_ERROR, status, reason=f"unexpected redirect ({status})"))
        return Attempt(_scrubbed(provider.classify(status, headers, body), secrets), None, headroom)
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()


async def _read_capped(response: httpx2.Response, max_bytes: int) -> bytes:
    return b"".join([piece async for piece in decoded_body(response, max_bytes)])


async def _read_stream(
    provider: Provider,
    response: httpx2.Response,
    on_text: OnText | None,
    max_bytes: int,
    schema: dict[str, Any] | None = None,
) -> tuple[Verdict, Completion | None]:
    decoder = provider.stream_decoder(schema)
    received = 0
    status = response.status_code
    parser = SSEParser()
    try:
        # One loop over the network pieces, each parsed whole: no generator hop per line or event.
        async for piece in decoded_body(response, max_bytes, "stream"):
            for event, data in parser.feed(piece):
                received += await _fed(decoder, event, data, on_text)
        for event, data in parser.feed(b"", final=True):
            received += await _fed(decoder, event, data, on_text)
        return Verdict(Outcome.OK, status), decoder.finish()
    except StreamFailed as exc:
        return exc.verdict, None
    except BadBody as exc:
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


async def _fed(decoder: StreamDecoder, event: str | None, data: str, on_text: OnText | None) -> int:
    """Feed one event to the decoder; the number of characters of answer it carried."""
    text = decoder.feed(event, data)
    if text and on_text is not None:
        await on_text(text)
    return len(text)


def cannot_connect(exc: Exception) -> str:
    """Why no connection was made, in a few words a person recognises (from the whole cause chain:
    the async stack wraps a refused connection in "All connection attempts failed")."""
    if isinstance(exc, httpx2.UnsupportedProtocol):
        return "not an http:// or https:// URL"
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(c) for c in chain).lower()
    if any(isinstance(c, ConnectionRefusedError) for c in chain) or "refused" in text:
        return "connection refused"
    if any(isinstance(c, socket.gaierror) for c in chain) or "name or service not known" in text:
        return "host name not found"
    if any(isinstance(c, ssl.SSLError) for c in chain) or "certificate" in text:
        return f"TLS failed ({one_line(str(chain[-1]))[:120]})"
    if "unreachable" in text:
        return "network unreachable"
    return f"cannot connect ({one_line(str(chain[-1]))[:120]})"


def _scrubbed(verdict: Verdict, secrets: list[str]) -> Verdict:
    if not verdict.reason:
        return verdict
    return replace(verdict, reason=scrub(verdict.reason, secrets))


def sse_json(data: str) -> Any:
    """One SSE data payload as JSON; a payload that is not JSON means the stream is corrupt."""
    try:
        return json.loads(data)
    except ValueError:
        raise MalformedResponse(f"a stream event is not JSON: {data[:60]!r}") from None
