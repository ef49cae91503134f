"""At most N MCP sessions per token, so one token cannot open sessions until everyone else gets 503.

Streamable HTTP: when a token opens one session more than its cap, its oldest idle session (no
request in flight) is closed first, the way its own client would close it (a DELETE through the
SDK); when every one is busy, the new session is refused with 429. SSE: a token's oldest stream
is closed. Sessions of other tokens are never touched. Without tokens (a loopback server) there is
one caller and nobody to starve: only the SDK's global limit applies.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from .auth import LOCAL_OWNER
from .http_guards import caller_of, send_json


def _count(scope: Scope, name: bytes) -> int:
    return sum(1 for k, _ in scope.get("headers", []) if k.lower() == name)


log = logging.getLogger("mcp_keygate.sessions")

Scope = dict[str, Any]
_SESSION_HEADER = b"mcp-session-id"
_VERSION_HEADER = b"mcp-protocol-version"


@dataclass
class _Session:
    last_used: float
    in_flight: int = 0


@dataclass
class _Stream:
    """An open SSE stream (a token's list of them is oldest first)."""

    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class SessionLimiter:
    def __init__(self, app: Any, per_token: int, idle_timeout_s: float, mcp_path: str, sse_path: str) -> None:
        self.app = app
        self.per_token = per_token
        self.idle_timeout_s = idle_timeout_s
        self.mcp_path = mcp_path
        self.sse_path = sse_path
        self.sessions: dict[str, dict[str, _Session]] = {}
        self.streams: dict[str, list[_Stream]] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope["path"].rstrip("/") if scope["type"] == "http" else ""
        if path == self.mcp_path:
            repeated = [h.decode() for h in (_SESSION_HEADER, _VERSION_HEADER) if _count(scope, h) > 1]
            if repeated:  # the SDK reads the first, a dict the last: two readings must never differ
                message = f"more than one {repeated[0]} header: send exactly one"
                await send_json(send, 400, "bad_request", message)
                return
            await self._streamable(scope, receive, send)
        elif path == self.sse_path:
            if scope["method"] != "GET":
                await send_json(send, 405, "method_not_allowed", f"{self.sse_path} takes GET", {"allow": "GET"})
                return
            await self._sse(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # Streamable HTTP
    async def _streamable(self, scope: Scope, receive: Any, send: Any) -> None:
        owner = caller_of(scope)
        if owner is None:
            await self.app(scope, receive, send)
            return
        mine = self.sessions.setdefault(owner, {})
        headers = dict(scope.get("headers", []))
        session_id = headers.get(_SESSION_HEADER, b"").decode("latin-1")
        if session_id:
            await self._use(mine, session_id, scope, receive, send)
            return
        if scope["method"] == "POST" and _opens_a_session(headers):
            self._forget_expired(mine)
            if len(mine) >= self.per_token and not await self._close_oldest_idle(mine, scope):
                message = (
                    f"this token has {len(mine)} MCP sessions open, all busy ([server] max_sessions_per_token = "
                    f"{self.per_token}): close one (DELETE with its mcp-session-id) or wait for a call to finish"
                )
                await send_json(send, 429, "too_many_sessions", message, {"retry-after": "5"})
                return
        opened: list[str] = []

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                opened.extend(v.decode("latin-1") for k, v in message.get("headers", []) if k == _SESSION_HEADER)
            await send(message)

        await self.app(scope, receive, watch)
        for new_id in opened:
            mine[new_id] = _Session(time.monotonic())
            # However the session was opened, the cap holds: an older idle one goes, else this one.
            if len(mine) > self.per_token and not await self._close_oldest_idle(mine, scope, spare=new_id):
                del mine[new_id]
                await self._delete(new_id, scope)

    async def _use(self, mine: dict[str, _Session], session_id: str, scope: Scope, receive: Any, send: Any) -> None:
        session = mine.get(session_id)
        if session is None:  # another token's, or unknown: the SDK answers 404 for either
            await self.app(scope, receive, send)
            return
        session.last_used = time.monotonic()
        busy = scope["method"] in ("POST", "GET")  # a tool call, or a stream the client listens on
        session.in_flight += busy
        try:
            await self.app(scope, receive, send)
        finally:
            session.in_flight -= busy
            session.last_used = time.monotonic()
            if scope["method"] == "DELETE":
                mine.pop(session_id, None)

    def _forget_expired(self, mine: dict[str, _Session]) -> None:
        """Sessions idle past the SDK's idle timeout are gone there already."""
        horizon = time.monotonic() - self.idle_timeout_s
        for session_id in [s for s, info in mine.items() if info.in_flight == 0 and info.last_used < horizon]:
            del mine[session_id]

    async def _close_oldest_idle(self, mine: dict[str, _Session], scope: Scope, spare: str = "") -> bool:
        idle = [(info.last_used, sid) for sid, info in mine.items() if info.in_flight == 0 and sid != spare]
        if not idle:
            return False
        _, session_id = min(idle)
        del mine[session_id]
        await self._delete(session_id, scope)
        log.info(
            "closed the oldest idle MCP session of %s (session cap %d)", caller_of(scope) or LOCAL_OWNER, self.per_token
        )
        return True

    async def _delete(self, session_id: str, opening: Scope) -> None:
        """DELETE the session through the SDK, as its own client would (same user, same Host)."""
        keep = (b"host", b"origin", b"authorization")
        headers = [(k, v) for k, v in opening.get("headers", []) if k in keep]
        scope = {**opening, "method": "DELETE", "headers": [*headers, (_SESSION_HEADER, session_id.encode())]}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await anyio.sleep_forever()
            raise AssertionError  # unreachable

        async def discard(_message: dict[str, Any]) -> None:
            pass

        with anyio.move_on_after(5):
            await self.app(scope, receive, discard)

    # SSE
    async def _sse(self, scope: Scope, receive: Any, send: Any) -> None:
        owner = caller_of(scope)
        if owner is None:
            await self.app(scope, receive, send)
            return
        mine = self.streams.setdefault(owner, [])
        while len(mine) >= self.per_token:
            oldest = mine.pop(0)
            oldest.scope.cancel()
            log.info("closed the oldest SSE stream of %s (session cap %d)", owner, self.per_token)
        stream = _Stream()
        mine.append(stream)
        started = finished = False

        async def watch(message: dict[str, Any]) -> None:
            nonlocal started, finished
            started = started or message["type"] == "http.response.start"
            finished = finished or (message["type"] == "http.response.body" and not message.get("more_body"))
            await send(message)

        try:
            with stream.scope:
                await self.app(scope, receive, watch)
        finally:
            if stream in mine:
                mine.remove(stream)
        if stream.scope.cancel_called and started and not finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _opens_a_session(headers: dict[bytes, bytes]) -> bool:
    """A POST without a session id opens one on the 2024–2025 wire; 2026-07-28 requests are sessionless."""
    version = headers.get(_VERSION_HEADER)
    return version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS
