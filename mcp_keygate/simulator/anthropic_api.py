"""The Anthropic Messages API as the simulator speaks it: bodies, errors, headers, streaming events."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .flow import Answer, Cut, Rejected, SimCall, serve, sse
from .media import MediaError, anthropic_blocks
from .state import Decision, fingerprint
from .structured import anthropic_tool_problem

STOP = {"stop": "end_turn", "length": "max_tokens"}


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = {"type": "error", "error": {"type": kind, "message": message, **extra}, "request_id": "req_sim"}
    return JSONResponse(body, status_code=status, headers=headers or {})


def _invalid(message: str) -> Response:
    return _error(400, "invalid_request_error", message)


def _text_of(content: Any) -> str | None:
    """A message's content: a string, or a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in content):
        return "".join(str(b.get("text", "")) for b in content)
    return None


def _rfc3339(seconds_from_now: float) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class AnthropicDialect:
    api = "anthropic"

    def invalid_json(self) -> Response:
        return _invalid("There was an issue with your request body: invalid JSON")

    def parse(self, request: Request, body: Any) -> SimCall:
        key = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()  # the 2026 SDK sends the key as a Bearer token
        if not key:
            raise Rejected(_error(401, "authentication_error", "x-api-key header is required"))
        log = {"key": fingerprint(key), "anthropic_version": request.headers.get("anthropic-version")}
        if not request.headers.get("anthropic-version"):
            raise Rejected(_invalid("anthropic-version: header is required"), **log)
        if not isinstance(body, dict):
            raise Rejected(_invalid("The request body must be a JSON object."), **log)
        model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
        if not isinstance(model, str) or not model:
            raise Rejected(_invalid("model: Field required"), **log)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise Rejected(_invalid("max_tokens: Field required"), **log, model=model)
        if not isinstance(messages, list) or not messages:
            raise Rejected(_invalid("messages: at least one message is required"), **log, model=model)
        turns, attachments = _turns(messages, {**log, "model": model})
        if turns[0]["role"] != "user":
            raise Rejected(_invalid('messages: first message must use the "user" role'), **log, model=model)
        system = body.get("system")
        system_text = _text_of(system) if system is not None else None
        if system is not None and system_text is None:
            raise Rejected(_invalid("system: Input should be a valid string or list of text blocks"), **log)
        temperature = body.get("temperature")
        if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 1):
            raise Rejected(_invalid("temperature: Input should be less than or equal to 1"), **log, model=model)
        tools, tool_choice = body.get("tools"), body.get("tool_choice")
        forced, schema = _forced_tool(tools, tool_choice, {**log, "model": model})
        return SimCall(
            key=key,
            model=model,
            turns=turns,
            system=system_text,
            max_tokens=max_tokens,
            stream=bool(body.get("stream")),
            log={
                "messages": messages,
                "system": system,
                "anthropic_version": request.headers.get("anthropic-version"),
                "auth": "x-api-key" if request.headers.get("x-api-key") else "bearer",
                "tools": tools,
                "tool_choice": tool_choice,
                "attachments": attachments,
            },
            schema=schema,
            tool=forced,
        )

    def headers(self, decision: Decision) -> dict[str, str]:
        return {
            "anthropic-ratelimit-requests-limit": str(decision.limit_requests),
            "anthropic-ratelimit-requests-remaining": str(decision.remaining_requests),
            "anthropic-ratelimit-requests-reset": _rfc3339(decision.reset_requests_s),
            "anthropic-ratelimit-tokens-limit": str(decision.limit_tokens),
            "anthropic-ratelimit-tokens-remaining": str(decision.remaining_tokens // 1000 * 1000),
            "anthropic-ratelimit-tokens-reset": _rfc3339(decision.reset_tokens_s),
            "request-id": "req_sim",
        }

    def error(self, decision: Decision, call: SimCall, prompt_tokens: int) -> Response:
        failure = decision.failure
        headers = self.headers(decision)
        if failure in ("ratelimit", "daily"):
            headers["retry-after"] = str(max(1, round(decision.retry_after_s or 30)))
            message = (
                f"This request would exceed the rate limit for your organization (org-sim) of "
                f"{decision.limit_requests} requests per minute. For details, refer to: "
                "https://docs.claude.com/en/api/rate-limits."
            )
            return _error(429, "rate_limit_error", message, headers)
        if failure == "quota":
            message = (
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to "
                "upgrade or purchase credits."
            )
            return _error(400, "invalid_request_error", message)
        if failure == "spendlimit":
            message = "You have reached your specified API usage limits. You will regain access on the 1st."
            return _error(
                429, "rate_limit_error", message, None, details={"error_code": "enforced_spend_limit_reached"}
            )
        if failure == "invalid":
            return _error(401, "authentication_error", "invalid x-api-key")
        if failure == "overloaded":
            return _error(529, "overloaded_error", "Overloaded")
        if failure == "context":
            return _error(
                400,
                "invalid_request_error",
                f"prompt is too long: {prompt_tokens} tokens > {decision.context_window} maximum",
            )
        return _error(500, "api_error", "Internal server error")

    def reply(self, answer: Answer, decision: Decision, call: SimCall | None = None) -> Response:
        content: list[dict[str, Any]] = [{"type": "text", "text": answer.text}]
        stop = STOP[answer.finish]
        if call is not None and call.tool is not None:
            given = json.loads(answer.text)
            content = [{"type": "tool_use", "id": f"toolu_sim{answer.id}", "name": call.tool, "input": given}]
            stop = "tool_use"
        return JSONResponse(
            {
                "id": f"msg_sim{answer.id}",
                "type": "message",
                "role": "assistant",
                "model": answer.model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": _usage(answer),
            },
            headers=self.headers(decision),
        )

    async def stream(self, call: SimCall, answer: Answer, cut: Cut) -> AsyncIterator[bytes]:
        start: dict[str, Any] = {
            "id": f"msg_sim{answer.id}",
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**_usage(answer), "output_tokens": 1},
        }
        yield sse({"type": "message_start", "message": start}, "message_start")
        first: dict[str, Any] = {"type": "text", "text": ""}
        if call.tool is not None:
            first = {"type": "tool_use", "id": f"toolu_sim{answer.id}", "name": call.tool, "input": {}}
        yield sse({"type": "content_block_start", "index": 0, "content_block": first}, "content_block_start")
        yield sse({"type": "ping"}, "ping")
        words = answer.words()
        for i, word in enumerate(words):
            if cut and i >= len(words) // 2:
                if cut == "error":
                    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                    yield sse(error, "error")
                return
            piece = {"type": "text_delta", "text": word}
            if call.tool is not None:
                piece = {"type": "input_json_delta", "partial_json": word}
            yield sse({"type": "content_block_delta", "index": 0, "delta": piece}, "content_block_delta")
        yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use" if call.tool else STOP[answer.finish], "stop_sequence": None},
            "usage": {"output_tokens": answer.completion_tokens},
        }
        yield sse(message_delta, "message_delta")
        yield sse({"type": "message_stop"}, "message_stop")


def _turns(messages: list[Any], log: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """The messages as {role, content} text (checked as the API checks them), and their files."""
    turns: list[dict[str, str]] = []
    attachments: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        try:
            found = anthropic_blocks(message.get("content")) if isinstance(message, dict) else None
        except MediaError as exc:
            raise Rejected(_invalid(f"messages.{i}.content: {exc}"), **log) from None
        text, files = found if found is not None else (None, [])
        attachments += [{"message": i, **f} for f in files]
        if files and role != "user":
            raise Rejected(_invalid(f"messages.{i}: image and document blocks are for user turns"), **log)
        if role not in ("user", "assistant"):
            raise Rejected(_invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'"), **log)
        if text is None or (not text.strip() and not files and i != len(messages) - 1):
            raise Rejected(
                _invalid(
                    f"messages.{i}: all messages must have non-empty content except for the optional "
                    "final assistant message"
                ),
                **log,
            )
        turns.append({"role": role, "content": text})
    return turns, attachments


def _forced_tool(tools: Any, tool_choice: Any, log: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The tool the request forces (its input is the answer) and that tool's input schema."""
    problem = anthropic_tool_problem(tools, tool_choice)
    if problem:
        raise Rejected(_invalid(problem), **log)
    forced = tool_choice.get("name") if isinstance(tool_choice, dict) and tool_choice["type"] == "tool" else None
    return forced, next((t["input_schema"] for t in tools or [] if t["name"] == forced), None)


def _usage(answer: Answer) -> dict[str, int]:
    return {
        "input_tokens": answer.prompt_tokens,
        "output_tokens": answer.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


DIALECT = AnthropicDialect()


async def messages(request: Request) -> Response:
    return await serve(DIALECT, request)
