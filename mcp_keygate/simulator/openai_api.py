"""The OpenAI Chat Completions API as the simulator speaks it: bodies, errors, headers, streaming."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .flow import Answer, Cut, Rejected, SimCall, serve, sse
from .media import MediaError, openai_parts
from .state import Decision, fingerprint
from .structured import openai_format_problem


def go_duration(seconds: float) -> str:
    """OpenAI's reset header format: `1s`, `6m0s`, `20ms`, `2m59.56s`."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    if minutes >= 1:
        return f"{int(minutes)}m{secs:g}s"
    return f"{round(secs, 3):g}s"


def _error(status: int, message: str, kind: str, code: str | None, headers: dict[str, str], param=None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _bad_request(message: str, param: str | None = None) -> Response:
    return _error(400, message, "invalid_request_error", None, {}, param=param)


def _masked(key: str) -> str:
    return f"{key[:3]}…{key[-4:]}" if len(key) > 8 else "…"


class OpenAIDialect:
    api = "openai"

    def invalid_json(self) -> Response:
        return _bad_request("We could not parse the JSON body of your request.")

    def parse(self, request: Request, body: Any) -> SimCall:
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("api-key", "").strip()
        if not key:
            raise Rejected(
                _error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an Authorization header "
                    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                    None,
                    {},
                )
            )
        if not isinstance(body, dict):
            raise Rejected(_bad_request("The request body must be a JSON object."))
        log = {"key": fingerprint(key)}
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            raise Rejected(_bad_request("you must provide a model parameter", "model"), **log)
        valid = (
            isinstance(messages, list)
            and messages
            and all(
                isinstance(m, dict)
                and m.get("role") in ("system", "developer", "user", "assistant")
                and isinstance(m.get("content"), str | list)
                for m in messages
            )
        )
        if not valid or not isinstance(messages, list):
            raise Rejected(
                _bad_request("'messages' must be a non-empty array of {role, content} objects", "messages"), **log
            )
        plain, attachments = _plain(messages, log)
        temperature = body.get("temperature")
        if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 2):
            message = (
                "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
                f"but got {temperature} instead."
            )
            raise Rejected(_bad_request(message, "temperature"), **log, model=model)
        response_format = body.get("response_format")
        schema = _schema(response_format, {**log, "model": model})
        system = "\n\n".join(m["content"] for m in plain if m["role"] in ("system", "developer")) or None
        turns = [m for m in plain if m["role"] not in ("system", "developer")]
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        return SimCall(
            key=key,
            model=model,
            turns=turns,
            system=system,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            stream=bool(body.get("stream")),
            log={
                "messages": messages,
                "include_usage": include_usage,
                "response_format": response_format,
                "attachments": attachments,
            },
            schema=schema,
        )

    def headers(self, decision: Decision) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(decision.limit_requests),
            "x-ratelimit-remaining-requests": str(decision.remaining_requests),
            "x-ratelimit-reset-requests": go_duration(decision.reset_requests_s),
            "x-ratelimit-limit-tokens": str(decision.limit_tokens),
            "x-ratelimit-remaining-tokens": str(decision.remaining_tokens),
            "x-ratelimit-reset-tokens": go_duration(decision.reset_tokens_s),
        }

    def error(self, decision: Decision, call: SimCall, prompt_tokens: int) -> Response:
        headers = self.headers(decision)
        failure, model = decision.failure, call.model
        if failure == "ratelimit":
            wait = decision.retry_after_s or 30.0
            headers["retry-after"] = str(max(1, round(wait)))
            message = (
                f"Rate limit reached for {model} in organization org-sim on requests per min (RPM): "
                f"Limit {decision.limit_requests}, Used {decision.limit_requests}, Requested 1. "
                f"Please try again in {go_duration(wait)}. Visit https://platform.openai.com/account/rate-limits "
                "to learn more."
            )
            return _error(429, message, "requests", "rate_limit_exceeded", headers)
        if failure == "daily":
            wait = decision.retry_after_s or 3600.0
            message = (
                f"Rate limit reached for {model} in organization org-sim on requests per day (RPD): "
                f"Limit {decision.behavior.rpd}, Used {decision.behavior.rpd}, Requested 1. "
                f"Please try again in {go_duration(wait)}."
            )
            return _error(429, message, "requests", "rate_limit_exceeded", headers)
        if failure == "quota":
            message = (
                "You exceeded your current quota, please check your plan and billing details. For more information "
                "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
            )
            return _error(429, message, "insufficient_quota", "insufficient_quota", headers)
        if failure == "spendlimit":
            message = "You have reached the spend limit set for your organization. Raise it in your billing settings."
            return _error(429, message, "insufficient_quota", "organization_spend_limit_exceeded", headers)
        if failure == "invalid":
            message = (
                f"Incorrect API key provided: {_masked(call.key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            return _error(401, message, "invalid_request_error", "invalid_api_key", {})
        if failure == "overloaded":
            message = "The server is overloaded, please try again later."
            return _error(503, message, "service_unavailable_error", "server_is_overloaded", {})
        if failure == "context":
            message = (
                f"This model's maximum context length is {decision.context_window} tokens. However, your messages "
                f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
            )
            return _error(400, message, "invalid_request_error", "context_length_exceeded", {}, param="messages")
        message = "The server had an error while processing your request. Sorry about that!"
        return _error(500, message, "server_error", None, {})

    def reply(self, answer: Answer, decision: Decision, call: SimCall | None = None) -> Response:
        return JSONResponse(
            {
                "id": f"chatcmpl-sim{answer.id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": answer.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": answer.finish,
                    }
                ],
                "usage": _usage(answer),
                "system_fingerprint": "fp_sim",
            },
            headers=self.headers(decision),
        )

    async def stream(self, call: SimCall, answer: Answer, cut: Cut) -> AsyncIterator[bytes]:
        created = int(time.time())

        def chunk(delta: dict, finish_reason: str | None, choices: bool = True) -> dict:
            return {
                "id": f"chatcmpl-sim{answer.id}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": answer.model,
                "system_fingerprint": "fp_sim",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
                if choices
                else [],
            }

        yield sse(chunk({"role": "assistant", "content": ""}, None))
        words = answer.words()
        for i, word in enumerate(words):
            if cut and i >= len(words) // 2:
                if cut == "error":
                    yield sse(
                        {
                            "error": {
                                "message": "The server had an error while streaming.",
                                "type": "server_error",
                                "param": None,
                                "code": None,
                            }
                        }
                    )
                return
            yield sse(chunk({"content": word}, None))
        yield sse(chunk({}, answer.finish))
        if call.log.get("include_usage"):
            yield sse({**chunk({}, None, choices=False), "usage": _usage(answer)})
        yield b"data: [DONE]\n\n"


def _usage(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def _plain(messages: list[dict[str, Any]], log: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """The messages as {role, content} text, and the files their parts carry (checked)."""
    attachments: list[dict[str, Any]] = []
    plain: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        try:
            text, files = openai_parts(m["content"], m["role"])
        except MediaError as exc:
            raise Rejected(_bad_request(f"messages[{i}]: {exc}", f"messages[{i}].content"), **log) from None
        plain.append({"role": m["role"], "content": text})
        attachments += [{"message": i, **f} for f in files]
    return plain, attachments


def _schema(response_format: Any, log: dict[str, Any]) -> dict[str, Any] | None:
    """The schema a structured answer must fit (None: a plain answer)."""
    if response_format is None:
        return None
    problem = openai_format_problem(response_format)
    if problem:
        raise Rejected(_bad_request(problem, "response_format"), **log)
    if response_format["type"] == "json_schema":
        return response_format["json_schema"]["schema"]
    return {"type": "object"} if response_format["type"] == "json_object" else None


DIALECT = OpenAIDialect()


async def chat_completions(request: Request) -> Response:
    return await serve(DIALECT, request)


_ALTERNATION = (
    "After the (optional) system message(s), user and assistant roles should be alternating with user/assistant/"
    "user/assistant..."
)


async def perplexity_chat_completions(request: Request) -> Response:
    """Chat Completions with Perplexity's quirk: after the system messages, roles must alternate from the user."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    messages = body.get("messages") if isinstance(body, dict) else None
    if isinstance(messages, list):
        roles = [m.get("role") for m in messages if isinstance(m, dict) and m.get("role") != "system"]
        if any(role != ("user", "assistant")[i % 2] for i, role in enumerate(roles)):
            return _error(400, _ALTERNATION, "invalid_message", None, {})
    return await serve(DIALECT, request)
