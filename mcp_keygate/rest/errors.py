"""Failures in OpenAI's error shape (`{"error": {"message", "type", "param", "code"}}`), with the
same explanations the MCP tools give (what was tried, when a key is ready again), so the official
SDKs raise the matching exception class."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse

from ..calls import CallTimedOut
from ..conversations import UnknownConversation
from ..errors import InvalidRequest, KeygateError, StoreError
from ..keys.secret import scrub
from ..policies import PolicyRefused
from ..router import RequestRejected, RouteFailed
from ..store.base import ConversationConflict


class ApiError(Exception):
    """A request this API refuses before any call: status, type and the one line that says why."""

    def __init__(self, status: int, message: str, *, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def error_body(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def from_api_error(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.kind, param=exc.param), exc.status)


def from_keygate_error(exc: KeygateError, secrets: list[str]) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for a failed call; the message is scrubbed of every secret."""
    message = scrub(str(exc), secrets)
    headers: dict[str, str] = {}
    if isinstance(exc, RouteFailed):
        if exc.ready_in_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(exc.ready_in_s)))
            return 429, error_body(message, "rate_limit_error", code="no_key_ready"), headers
        return 503, error_body(message, "api_error", code="no_usable_key"), headers
    if isinstance(exc, PolicyRefused):
        return 403, error_body(message, "permission_error", code="policy"), headers
    if isinstance(exc, UnknownConversation):
        return 404, error_body(message, "invalid_request_error", param="x-keygate-conversation"), headers
    if isinstance(exc, ConversationConflict):
        return 409, error_body(message, "invalid_request_error", param="x-keygate-conversation"), headers
    if isinstance(exc, CallTimedOut):
        return 504, error_body(message, "timeout_error"), headers
    if isinstance(exc, InvalidRequest | RequestRejected):
        return 400, error_body(message, "invalid_request_error", param=_field_of(message)), headers
    if isinstance(exc, StoreError):
        return 503, error_body(message, "api_error", code="store_unavailable"), headers
    return 500, error_body(message, "api_error"), headers


def _field_of(message: str) -> str | None:
    """The field an InvalidRequest message starts with (`max_tokens: must be …`)."""
    head, sep, _ = message.partition(":")
    return head if sep and head.replace("_", "").replace(".", "").isalnum() and len(head) < 40 else None


class OpenAIErrorShape:
    """ASGI middleware for `/v1/`: the guards' own refusals (401 without a token, 400 for two
    Authorization headers, 408, 413, 503 while draining) answer `{"error": "…", "message": "…"}`;
    here they take OpenAI's shape, so the SDKs raise their usual classes with the message."""

    def __init__(self, app: Any, prefix: str = "/v1/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}

        async def reshaping(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start.update(message)  # held until the body shows whether it is a guard's
                return
            if message["type"] == "http.response.body" and start and message.get("more_body"):
                await send(dict(start))  # a body in several parts is not a guard's: as it is
                start.clear()
            if message["type"] == "http.response.body" and start:
                body = _reshaped(message.get("body", b""), start["status"])
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                start.clear()
                await send({**message, "body": body})
                return
            await send(message)

        await self.app(scope, receive, reshaping)


_KINDS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error"}


def _reshaped(body: bytes, status: int) -> bytes:
    try:
        found = json.loads(body)
    except ValueError:
        return body
    if not (isinstance(found, dict) and isinstance(found.get("error"), str) and "message" in found):
        return body  # already OpenAI's shape (ours), or not an error we know
    kind = _KINDS.get(status, "rate_limit_error" if status == 429 else "api_error")
    return json.dumps(error_body(str(found["message"]), kind, code=found["error"])).encode()
