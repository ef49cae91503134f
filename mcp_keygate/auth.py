"""Bearer tokens with names, for the HTTP transports.

A team gives each client its own token so one can be revoked alone; logs and conversations
know a caller by the token's name, never by the token. Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

LOCAL_OWNER = "local"  # the owner of conversations made over stdio or an unauthenticated loopback server


class TokenRegistry:
    def __init__(self, tokens: Mapping[str, str]) -> None:
        # Only digests are kept: equal-length inputs to compare_digest, and no token in memory dumps of this object.
        self._digests = [(name, _digest(token)) for name, token in tokens.items() if token]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def names(self) -> list[str]:
        return [name for name, _ in self._digests]

    def name_for(self, token: str | None) -> str | None:
        """The name of a valid token, else None; every configured token is compared, in constant time."""
        if not token:
            return None
        offered = _digest(token)
        found = None
        for name, digest in self._digests:
            if hmac.compare_digest(offered, digest) and found is None:
                found = name
        return found

    def name_for_header(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        return self.name_for(authorization[7:].strip())


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class BearerAuthMiddleware:
    """Refuse (401) every request under `protected` prefixes without a valid bearer token."""

    def __init__(self, app: ASGIApp, registry: TokenRegistry, protected: tuple[str, ...]) -> None:
        self.app = app
        self.registry = registry
        self.protected = protected

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.registry.enabled or not scope["path"].startswith(self.protected):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        name = self.registry.name_for_header(headers.get("authorization"))
        if name is None:
            body = (
                b'{"error": "unauthorized", "message": "a valid bearer token is required (Authorization: Bearer ...)"}'
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer realm="mcp-keygate"'),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["keygate_token_name"] = name
        await self.app(scope, receive, send)
