"""Resumable streamable-HTTP streams: a client whose connection drops mid-call reconnects with
`Last-Event-ID` and gets the events it missed (progress, log messages, the answer).

The SDK calls one event store for every session, and its stream ids (JSON-RPC request ids) repeat
across sessions. So each session gets a private namespace: `SessionScopes`, an ASGI middleware,
binds every request of a session to that session's scope (a context variable the SDK's tasks
inherit), and the stores file and look up events only inside the current scope. A client can
never replay another session's events, whatever event id it sends.

`MemoryEventStore` is bounded by event count and bytes (the oldest events go first);
`RedisEventStore` (resume_redis.py) keeps them in Redis when the Redis backend is on.
"""

from __future__ import annotations

import itertools
import secrets
from collections import OrderedDict, deque
from contextvars import ContextVar
from dataclasses import dataclass, field

from mcp.server.streamable_http import GET_STREAM_KEY, EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage, jsonrpc_message_adapter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_HEADER = b"mcp-session-id"


@dataclass(frozen=True)
class SessionScope:
    """One MCP session's private namespace for its events."""

    namespace: str = field(default_factory=lambda: secrets.token_hex(12))


_current: ContextVar[SessionScope | None] = ContextVar("keygate_session_scope", default=None)


def current_namespace() -> str:
    """The namespace of the session being served (one of its own for a request outside any)."""
    scope = _current.get()
    return scope.namespace if scope is not None else "unscoped"


class SessionScopes:
    """ASGI middleware for the MCP path: a request that opens a session gets a new scope (and the
    session id in the reply is remembered for it); a request naming a session gets that session's
    scope; a session id never seen gets a fresh, empty one. The SDK answers 404 to a session id that
    is not the caller's, so a scope is only ever used by its own session."""

    def __init__(self, app: ASGIApp, *, mcp_path: str, capacity: int = 10_000) -> None:
        self.app = app
        self.mcp_path = mcp_path
        self.capacity = capacity
        self.sessions: OrderedDict[str, SessionScope] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.mcp_path:
            await self.app(scope, receive, send)
            return
        named = dict(scope["headers"]).get(SESSION_HEADER)
        session = self.sessions.get(named.decode("latin-1")) if named else None
        own = session or SessionScope()
        token = _current.set(own)
        try:
            await self.app(scope, receive, send if named else self._remembering(own, send))
        finally:
            _current.reset(token)

    def _remembering(self, own: SessionScope, send: Send) -> Send:
        async def sender(message: Message) -> None:
            if message["type"] == "http.response.start":
                opened = dict(message.get("headers", [])).get(SESSION_HEADER)
                if opened:
                    self.sessions[opened.decode("latin-1")] = own
                    while len(self.sessions) > self.capacity:
                        self.sessions.popitem(last=False)
            await send(message)

        return sender


@dataclass
class _Stored:
    namespace: str
    stream_id: StreamId
    data: bytes | None  # None: a priming event (no message)


class MemoryEventStore(EventStore):
    """Events in this process, at most `max_events` and about `max_bytes`; the oldest go first. A
    client that comes back after its events were dropped gets a fresh stream (and the SDK's answer
    for an unknown event), never someone else's events."""

    def __init__(self, max_events: int = 10_000, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.bytes = 0
        self._events: OrderedDict[EventId, _Stored] = OrderedDict()
        self._streams: dict[tuple[str, StreamId], deque[EventId]] = {}
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        namespace = current_namespace()
        data = None if message is None else message.model_dump_json(by_alias=True, exclude_unset=True).encode()
        event_id = str(next(self._ids))
        self._events[event_id] = _Stored(namespace, stream_id, data)
        self._streams.setdefault((namespace, stream_id), deque()).append(event_id)
        self.bytes += len(data or b"")
        while len(self._events) > self.max_events or self.bytes > self.max_bytes:
            self._forget_oldest()
        return event_id

    def _forget_oldest(self) -> None:
        event_id, stored = self._events.popitem(last=False)
        self.bytes -= len(stored.data or b"")
        stream = self._streams[(stored.namespace, stored.stream_id)]
        stream.popleft()  # the oldest event overall is the oldest of its stream
        if not stream:
            del self._streams[(stored.namespace, stored.stream_id)]

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        last = self._events.get(last_event_id)
        if last is None or last.namespace != current_namespace():
            return None
        stream = list(self._streams.get((last.namespace, last.stream_id), ()))
        for event_id in stream[stream.index(last_event_id) + 1 :]:
            stored = self._events.get(event_id)
            if stored is not None and stored.data is not None:
                message = jsonrpc_message_adapter.validate_json(stored.data, by_name=False)
                await send_callback(EventMessage(message, event_id))
        return last.stream_id

    @property
    def count(self) -> int:
        """Events kept now (not `__len__`: the SDK tests the store for truth, and empty is falsy)."""
        return len(self._events)


class RequestRepliesUnkept(EventStore):
    """With `json_response`, a request's reply is a plain JSON body that no client can resume, yet the
    SDK files it as an event (a copy in memory, or a Redis write with the Redis backend, per call).
    This keeps only the standalone GET stream's events, the one stream there is to replay."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        if stream_id == GET_STREAM_KEY:
            return await self.inner.store_event(stream_id, message)
        return f"unkept-{next(self._ids)}"

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        return await self.inner.replay_events_after(last_event_id, send_callback)
