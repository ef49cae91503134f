"""Failures in OpenAI's error shape (`{"error": {"message", "type", "param", "code"}}`), with the
same explanations the MCP tools give (what was tried, when a key is ready again), so the official
SDKs raise the matching exception class."""

from __future__ import annotations

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
