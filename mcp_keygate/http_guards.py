"""ASGI guards in front of every HTTP route: who is calling, from which host, and how slowly.

Order, outermost first: `HostGuard` (DNS rebinding: Host and Origin on every route but /healthz),
`BearerAuth` (exactly one Authorization header; the token's name becomes the request's user — the
only identity tools see), `BodyDeadline` (a request body arrives whole within a deadline, or 408:
after authentication, so a caller without a token cannot make the server hold bodies).
Sessions per token are bounded by `sessions.SessionLimiter`, inside these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request

from .auth import TokenRegistry, authenticated_user

Scope = dict[str, Any]
OPEN_PATHS = ("/healthz",)  # load balancers probe it without a token, from any Host
UNAUTHORIZED = "a valid bearer token is required (Authorization: Bearer ...)"
CHALLENGE = {"www-authenticate": 'Bearer realm="mcp-keygate"'}


async def send_json(send: Any, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
    """One small JSON error response: `{"error": …, "message": …}`."""
    body = json.dumps({"error": error, "message": message}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _is_open(scope: Scope) -> bool:
    return scope["type"] != "http" or scope["path"] in OPEN_PATHS


class HostGuard:
    """Refuse a Host or Origin that is not loopback or explicitly allowed, on every route but /healthz.

    The MCP routes check again themselves; /status and /metrics rely on this one.
    """

    def __init__(self, app: Any, settings: TransportSecuritySettings) -> None:
        self.app = app
        self.security = TransportSecurityMiddleware(settings)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if not _is_open(scope):
            refused = await self.security.validate_request(Request(scope, receive), is_post=False)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyDeadline:
    """Read a request body whole within `timeout_s` (else 408) and at most `max_bytes` (else 413).

    A client that trickles its body one byte at a time would otherwise hold a worker's request
    open forever; buffering first also means the app never waits on a slow client.
    """

    def __init__(self, app: Any, timeout_s: float, max_bytes: int) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            message = f"the request body is larger than {self.max_bytes} bytes ([limits] max_request_bytes)"
            await send_json(send, 413, "payload_too_large", message, {"connection": "close"})
            return
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.timeout_s) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    message = f"the request body is larger than {self.max_bytes} bytes ([limits] max_request_bytes)"
                    await send_json(send, 413, "payload_too_large", message, {"connection": "close"})
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            message = f"the request body did not arrive within {self.timeout_s:g} s ([server] body_timeout_s)"
            await send_json(send, 408, "request_timeout", message, {"connection": "close"})
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class BearerAuth:
    """Identify the caller by its bearer token; refuse what cannot be identified.

    More than one Authorization header is refused with 400 on every route (two layers must never
    read two different ones). With tokens configured, a request to any route but /healthz and
    `optional` ones (the /status page shows its own token form) needs a valid token: 401 otherwise.
    The token's name becomes `scope["user"]` (the MCP SDK binds sessions to it) and the SDK's
    access-token context, which is where tools read the caller from.
    """

    def __init__(self, app: Any, registry: TokenRegistry, optional: tuple[str, ...] = ()) -> None:
        self.app = app
        self.registry = registry
        self.optional = optional

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
        if len(values) > 1:
            message = "more than one Authorization header: send exactly one (Authorization: Bearer <token>)"
            await send_json(send, 400, "bad_request", message)
            return
        if not self.registry.enabled or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        name = self.registry.name_for_header(values[0].decode("latin-1") if values else None)
        if name is None:
            if scope["path"] in self.optional:
                await self.app(scope, receive, send)
                return
            await send_json(send, 401, "unauthorized", UNAUTHORIZED, CHALLENGE)
            return
        user = authenticated_user(name)
        scope["user"] = user
        reset = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(reset)


def _header(scope: Scope, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name), "").strip()


def _has_body(scope: Scope) -> bool:
    """Any method may carry a body (the SDK reads one for GET and DELETE too): bound them all."""
    length = _header(scope, b"content-length")
    return bool(_header(scope, b"transfer-encoding")) or (length != "" and length != "0")


def caller_of(scope: Mapping[str, Any]) -> str | None:
    """The token name the auth guard established for this request, if any."""
    user = scope.get("user")
    token = getattr(user, "access_token", None)
    return getattr(token, "client_id", None)
