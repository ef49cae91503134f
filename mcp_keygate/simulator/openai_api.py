"""The OpenAI Chat Completions API as the simulator speaks it: bodies, errors, headers, streaming."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .state import Decision, SimState, estimate_tokens, fingerprint, reply_text


def _go_duration(seconds: float) -> str:
    """OpenAI's reset header format: `1s`, `6m0s`, `20ms`, `2m59.56s`."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    if minutes >= 1:
        return f"{int(minutes)}m{secs:g}s"
    return f"{round(secs, 3):g}s"


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(decision.limit_requests),
        "x-ratelimit-remaining-requests": str(decision.remaining_requests),
        "x-ratelimit-reset-requests": _go_duration(decision.reset_requests_s),
        "x-ratelimit-limit-tokens": str(decision.limit_tokens),
        "x-ratelimit-remaining-tokens": str(decision.remaining_tokens),
        "x-ratelimit-reset-tokens": _go_duration(decision.reset_tokens_s),
    }


def _error(status: int, message: str, kind: str, code: str | None, headers: dict[str, str], param=None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _masked(key: str) -> str:
    return f"{key[:3]}…{key[-4:]}" if len(key) > 8 else "…"


def error_response(decision: Decision, key: str, model: str, prompt_tokens: int) -> Response:
    headers = ratelimit_headers(decision)
    failure = decision.failure
    if failure == "ratelimit":
        wait = decision.retry_after_s or 30.0
        headers["retry-after"] = str(max(1, round(wait)))
        message = (
            f"Rate limit reached for {model} in organization org-sim on requests per min (RPM): "
            f"Limit {decision.limit_requests}, Used {decision.limit_requests}, Requested 1. "
            f"Please try again in {_go_duration(wait)}. Visit https://platform.openai.com/account/rate-limits "
            "to learn more."
        )
        return _error(429, message, "requests", "rate_limit_exceeded", headers)
    if failure == "daily":
        wait = decision.retry_after_s or 3600.0
        message = (
            f"Rate limit reached for {model} in organization org-sim on requests per day (RPD): "
            f"Limit {decision.behavior.rpd}, Used {decision.behavior.rpd}, Requested 1. "
            f"Please try again in {_go_duration(wait)}."
        )
        return _error(429, message, "requests", "rate_limit_exceeded", headers)
    if failure == "quota":
        message = (
            "You exceeded your current quota, please check your plan and billing details. For more "
            "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
        )
        return _error(429, message, "insufficient_quota", "insufficient_quota", headers)
    if failure == "invalid":
        message = (
            f"Incorrect API key provided: {_masked(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return _error(401, message, "invalid_request_error", "invalid_api_key", {})
    if failure == "overloaded":
        return _error(
            503,
            "The server is overloaded, please try again later.",
            "service_unavailable_error",
            "server_is_overloaded",
            {},
        )
    if failure == "context":
        message = (
            f"This model's maximum context length is {decision.context_window} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
        )
        return _error(400, message, "invalid_request_error", "context_length_exceeded", {}, param="messages")
    return _error(
        500, "The server had an error while processing your request. Sorry about that!", "server_error", None, {}
    )


def _bad_request(message: str, param: str | None = None) -> Response:
    return _error(400, message, "invalid_request_error", None, {}, param=param)


async def chat_completions(request: Request) -> Response:
    """Serve one request and log it, whatever its fate (tests read the log)."""
    state: SimState = request.app.state.sim
    response, entry = await _serve(request, state)
    state.record({"api": "openai", "path": request.url.path, **entry, "status": response.status_code})
    return response


async def _serve(request: Request, state: SimState) -> tuple[Response, dict[str, Any]]:
    auth = request.headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not key:
        return _error(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
            None,
            {},
        ), {"outcome": "invalid"}
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _bad_request("We could not parse the JSON body of your request."), {"outcome": "bad_request"}
    if not isinstance(body, dict):
        return _bad_request("The request body must be a JSON object."), {"outcome": "bad_request"}
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        return _bad_request("you must provide a model parameter", "model"), {"outcome": "bad_request"}
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        return _bad_request("'messages' must be a non-empty array of {role, content} objects", "messages"), {
            "outcome": "bad_request"
        }
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 2):
        return _bad_request(
            f"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
            f"but got {temperature} instead.",
            "temperature",
        ), {"outcome": "bad_request", "key": fingerprint(key), "model": model}
    stream = bool(body.get("stream"))
    prompt_tokens = estimate_tokens([m["content"] for m in messages])
    decision = state.decide(key, model, prompt_tokens)
    entry: dict[str, Any] = {
        "key": fingerprint(key),
        "model": model,
        "messages": messages,
        "stream": stream,
        "max_tokens": body.get("max_completion_tokens", body.get("max_tokens")),
    }
    if decision.behavior.latency_ms:
        await anyio.sleep(decision.behavior.latency_ms / 1000)
    if decision.failure is not None:
        return error_response(decision, key, model, prompt_tokens), {**entry, "outcome": decision.failure}
    system = next((m["content"] for m in messages if m["role"] in ("system", "developer")), None)
    text = reply_text(model, [m for m in messages if m["role"] not in ("system", "developer")], system)
    max_tokens = entry["max_tokens"]
    finish = "stop"
    words = text.split(" ")
    if isinstance(max_tokens, int) and max_tokens > 0 and len(words) > max_tokens:
        text, finish = " ".join(words[:max_tokens]), "length"
    completion_tokens = estimate_tokens([text])
    entry["outcome"] = "ok"
    headers = ratelimit_headers(decision)
    completion_id = f"chatcmpl-sim{uuid.uuid4().hex[:20]}"
    created = int(time.time())
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if stream:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            _stream(completion_id, created, model, text, finish, usage if include_usage else None),
            media_type="text/event-stream",
            headers=headers,
        ), entry
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
            "system_fingerprint": "fp_sim",
        },
        headers=headers,
    ), entry


async def _stream(
    completion_id: str, created: int, model: str, text: str, finish: str, usage: dict | None
) -> AsyncIterator[bytes]:
    def chunk(delta: dict, finish_reason: str | None, extra: dict | None = None) -> bytes:
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if extra is not None:
            data.update(extra)
        return f"data: {json.dumps(data)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""}, None)
    words = text.split(" ")
    for i, word in enumerate(words):
        yield chunk({"content": word if i == 0 else " " + word}, None)
    yield chunk({}, finish)
    if usage is not None:
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_sim",
            "choices": [],
            "usage": usage,
        }
        yield f"data: {json.dumps(data)}\n\n".encode()
    yield b"data: [DONE]\n\n"
