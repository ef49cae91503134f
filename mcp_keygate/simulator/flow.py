"""One simulated call, the same for every API: parse, decide, answer or fail, log.

Each API module (a `Dialect`) only knows its own wire format; this module makes sure every
API fails in the same situations and logs every request, whatever its fate.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .faults import TRANSPORT_FAULTS, fault_response
from .state import Decision, SimState, estimate_tokens, fingerprint, reply_text
from .structured import example_for, violating

Cut = Literal["cut", "error"] | None


@dataclass(slots=True)
class SimCall:
    """A parsed request, in neutral terms plus what the log should show in the API's own shape."""

    key: str
    model: str
    turns: list[dict[str, str]]  # non-system messages as {role, content}
    system: str | None
    max_tokens: int | None
    stream: bool
    log: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] | None = None  # a structured answer was asked for: it must fit this
    tool: str | None = None  # Anthropic: the forced tool whose input is the answer


@dataclass(frozen=True, slots=True)
class Answer:
    id: str
    model: str
    text: str
    finish: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int

    def words(self) -> list[str]:
        """The answer as stream deltas: words with their leading spaces."""
        parts = self.text.split(" ")
        return [p if i == 0 else " " + p for i, p in enumerate(parts)]


class Rejected(Exception):
    """A request the API itself refuses (validation), as that API's response."""

    def __init__(self, response: Response, **log: Any) -> None:
        self.response = response
        self.log = log


class Dialect(Protocol):
    api: str

    def parse(self, request: Request, body: Any) -> SimCall:
        """Validate the request; raise Rejected with the API's error response."""

    def headers(self, decision: Decision) -> dict[str, str]: ...

    def error(self, decision: Decision, call: SimCall, prompt_tokens: int) -> Response: ...

    def reply(self, answer: Answer, decision: Decision, call: SimCall | None = None) -> Response: ...

    def stream(self, call: SimCall, answer: Answer, cut: Cut) -> AsyncIterator[bytes]: ...

    def invalid_json(self) -> Response: ...


def sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {json.dumps(data)}\n\n".encode()


async def serve(dialect: Dialect, request: Request) -> Response:
    state: SimState = request.app.state.sim
    entry: dict[str, Any] = {"api": dialect.api, "path": request.url.path}
    response = await _handle(dialect, request, state, entry)
    state.record({**entry, "status": response.status_code})
    return response


async def _handle(dialect: Dialect, request: Request, state: SimState, entry: dict[str, Any]) -> Response:
    try:
        body = json.loads(await request.body())
    except ValueError:
        entry["outcome"] = "bad_request"
        return dialect.invalid_json()
    try:
        call = dialect.parse(request, body)
    except Rejected as exc:
        entry.update(exc.log, outcome="bad_request")
        return exc.response
    entry.update(
        key=fingerprint(call.key), model=call.model, stream=call.stream, max_tokens=call.max_tokens, **call.log
    )
    replay = state.scenario.behavior_for(call.key).replay
    if replay is not None:
        entry["outcome"] = f"replay:{replay}"
        return replayed(replay)
    texts = [t["content"] for t in call.turns] + ([call.system] if call.system else [])
    prompt_tokens = estimate_tokens(texts)
    decision = state.decide(call.key, call.model, prompt_tokens)
    if decision.behavior.latency_ms:
        await anyio.sleep(decision.behavior.latency_ms / 1000)
    failure = decision.failure
    entry["outcome"] = failure or "ok"
    if decision.retry_after_s:
        entry["retry_after_s"] = decision.retry_after_s
    if failure in TRANSPORT_FAULTS:
        decision.failure = None
        return await fault_response(failure, await _handle_answer(dialect, call, decision, prompt_tokens, None))
    if failure is not None and failure not in ("streamcut", "streamerror", "badjson"):
        return dialect.error(decision, call, prompt_tokens)
    return await _handle_answer(dialect, call, decision, prompt_tokens, failure)


async def _handle_answer(
    dialect: Dialect, call: SimCall, decision: Decision, prompt_tokens: int, failure: str | None
) -> Response:
    answer = _answer(call, prompt_tokens, decision.behavior.reply_words, bad_json=failure == "badjson")
    if not call.stream:
        if failure == "streamerror":
            decision.failure = "server_error"
            return dialect.error(decision, call, prompt_tokens)
        response = dialect.reply(answer, decision, call)
        if failure == "streamcut":
            headers = {k: v for k, v in response.headers.items() if k != "content-length"}
            return Response(response.body[: len(response.body) // 2], response.status_code, headers)
        return response
    cut: Cut = {"streamcut": "cut", "streamerror": "error"}.get(failure or "")  # type: ignore[assignment]
    return StreamingResponse(
        dialect.stream(call, answer, cut), media_type="text/event-stream", headers=dialect.headers(decision)
    )


def replayed(name: str) -> Response:
    """A corpus entry as the provider sent it (headers that describe the transfer are recomputed)."""
    from .corpus import load_corpus

    recorded = load_corpus()[name]
    skip = {"content-length", "transfer-encoding", "content-encoding", "connection"}
    headers = {k: v for k, v in recorded.headers.items() if k not in skip}
    headers.setdefault("content-type", "application/json")
    return Response(recorded.body_bytes(), recorded.status, headers)


def _answer(call: SimCall, prompt_tokens: int, reply_words: int | None, bad_json: bool = False) -> Answer:
    if call.schema is not None:  # structured: JSON that fits the schema (or, for a bad-JSON key, does not)
        value = violating(call.schema) if bad_json else example_for(call.schema)
        text = json.dumps(value)
        return Answer(uuid.uuid4().hex[:24], call.model, text, "stop", prompt_tokens, estimate_tokens([text]))
    text = reply_text(call.model, call.turns, call.system)
    words = text.split(" ")
    if reply_words and len(words) < reply_words:
        words += [f"w{i}" for i in range(reply_words - len(words))]
        text = " ".join(words)
    finish: Literal["stop", "length"] = "stop"
    if call.max_tokens is not None and 0 < call.max_tokens < len(words):
        text, finish = " ".join(words[: call.max_tokens]), "length"
    return Answer(uuid.uuid4().hex[:24], call.model, text, finish, prompt_tokens, estimate_tokens([text]))
