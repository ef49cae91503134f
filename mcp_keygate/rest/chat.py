"""`POST /v1/chat/completions` in OpenAI's shape, answered by the same router, pool, policies,
budgets and usage accounting as the MCP `complete` tool.

A request is read strictly: fields we honour, fields we accept and ignore because they do not
change the answer's content (`user`, `seed`, `metadata`…), and fields we refuse with a message
naming them (tools, `response_format`, `n` > 1…) rather than answering something else than asked.
Streamed replies send SSE comments while the call waits (progress, heartbeats), then the answer
once it is complete and checked: a stream cut upstream is retried on another key, never
delivered half.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..complete_request import DEFAULT_MAX_WAIT_S, CompleteRequest
from ..schemas import CompleteResult, InputMessage
from .errors import ApiError

CONVERSATION_HEADER = "x-keygate-conversation"
MAX_WAIT_HEADER = "x-keygate-max-wait"
_HONOURED = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature"}
_IGNORED = {"user", "seed", "metadata", "store", "service_tier", "top_p", "presence_penalty", "frequency_penalty", "n"}
_REFUSED = {
    "tools": "tool calling",
    "tool_choice": "tool calling",
    "functions": "function calling",
    "function_call": "function calling",
    "parallel_tool_calls": "tool calling",
    "response_format": "response formats",
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "logit_bias": "logit bias",
    "stop": "stop sequences",
    "audio": "audio output",
    "modalities": "other output modalities",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
    "reasoning_effort": "reasoning settings",
}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter", "max_tokens": "length"}
CHUNK_CHARS = 400


@dataclass(frozen=True)
class ChatCall:
    request: CompleteRequest
    stream: bool
    include_usage: bool


def parse_chat(body: Any, headers: Mapping[str, str]) -> ChatCall:
    """The call a chat-completions body asks for, or ApiError naming the field that is wrong."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object with `model` and `messages`")
    for name in body:
        if name in _REFUSED and body[name] not in (None, False, [], {}):
            raise ApiError(400, f"{name}: {_REFUSED[name]} is not supported by mcp-keygate", param=name)
        if name not in _HONOURED | _IGNORED | set(_REFUSED):
            raise ApiError(400, f"{name}: unknown field; expected some of {', '.join(sorted(_HONOURED))}", param=name)
    if body.get("n") not in (None, 1):
        raise ApiError(400, "n: only one choice per request (n = 1)", param="n")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: required, a route or model name (GET /v1/models lists them)", param="model")
    stream = _flag(body, "stream")
    options = body.get("stream_options") or {}
    request = CompleteRequest(
        messages=_messages(body.get("messages")),
        model=model,
        conversation_id=headers.get(CONVERSATION_HEADER) or None,
        max_tokens=_number(body, "max_completion_tokens", int) or _number(body, "max_tokens", int),
        temperature=_temperature(body),
        max_wait_s=_max_wait(headers.get(MAX_WAIT_HEADER)),
    )
    return ChatCall(request, stream, isinstance(options, dict) and options.get("include_usage") is True)


def _messages(raw: Any) -> list[InputMessage]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages: required, a non-empty list of {role, content}", param="messages")
    messages = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{where}: expected an object with role and content", param=where)
        raw_role = item.get("role")
        role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            got = str(item.get("role"))[:40]
            raise ApiError(
                400, f"{where}.role: expected system, developer, user or assistant; got {got!r}", param=where
            )
        messages.append(InputMessage(role=role, content=_text(item.get("content"), where)))
    return messages


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or a list of text parts (other part types are refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(
                    400, f"{where}.content[{j}]: only text parts are accepted here (got {kind!r})", param=where
                )
            texts.append(part["text"])
        return "\n".join(texts)
    raise ApiError(400, f"{where}.content: expected a string or a list of text parts", param=where)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool) and value is not None:
        raise ApiError(400, f"{name}: expected true or false", param=name)
    return bool(value)


def _number(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise ApiError(400, f"{name}: expected {'a whole number' if kind is int else 'a number'}", param=name)
    return value


def _temperature(body: dict[str, Any]) -> float | None:
    value = _number(body, "temperature", float)
    if value is not None and not 0 <= value <= 2:
        raise ApiError(400, f"temperature: expected 0 to 2, got {value}", param="temperature")
    return value


def _max_wait(raw: str | None) -> float:
    """Seconds from the header: 0 to 600, as the MCP tool takes them."""
    if raw is None:
        return DEFAULT_MAX_WAIT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= 600:  # NaN fails this too
        raise ApiError(400, f"{MAX_WAIT_HEADER}: expected seconds from 0 to 600, got {raw[:20]!r}")
    return seconds


def completion_body(result: CompleteResult, created: int | None = None) -> dict[str, Any]:
    """The chat.completion object for an answered call."""
    return {
        "id": _completion_id(result),
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text, "refusal": None},
                "finish_reason": _FINISH.get(result.finish_reason, "stop"),
                "logprobs": None,
            }
        ],
        "usage": _usage(result),
    }


def result_headers(result: CompleteResult) -> dict[str, str]:
    return {
        CONVERSATION_HEADER: result.conversation_id,
        "x-keygate-model": result.model,
        "x-keygate-provider": result.provider,
        "x-keygate-key-id": result.key_id,
        "x-keygate-attempts": str(len(result.attempts)),
    }


def stream_chunks(result: CompleteResult, include_usage: bool) -> AsyncIterator[str]:
    """The answer as chat.completion.chunk events, then `[DONE]`."""

    async def chunks() -> AsyncIterator[str]:
        base = {"id": _completion_id(result), "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = result.model

        def event(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return sse({**base, "choices": [choice]})

        yield event({"role": "assistant", "content": ""})
        for start in range(0, len(result.text), CHUNK_CHARS):
            yield event({"content": result.text[start : start + CHUNK_CHARS]})
        yield event({}, _FINISH.get(result.finish_reason, "stop"))
        if include_usage:
            yield sse({**base, "choices": [], "usage": _usage(result)})
        yield "data: [DONE]\n\n"

    return chunks()


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _usage(result: CompleteResult) -> dict[str, int]:
    used = result.usage
    return {
        "prompt_tokens": used.input_tokens,
        "completion_tokens": used.output_tokens,
        "total_tokens": used.input_tokens + used.output_tokens,
    }


def _completion_id(result: CompleteResult) -> str:
    return f"chatcmpl-{result.conversation_id}-{len(result.attempts)}"
