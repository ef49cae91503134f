"""Resumable-stream events in Redis (when the Redis backend is on): one Redis stream per MCP
session, capped in length and expiring with the session, so the buffer lives beside the key
state instead of in each instance's memory and survives the instance's own restarts of its
event loop. The namespace rules are those of `resume.py`: a session reads only its own events."""

from __future__ import annotations

import logging
import math
import re
import time
from typing import TYPE_CHECKING, Any

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage, jsonrpc_message_adapter

from .errors import StoreError
from .resume import MemoryEventStore, current_namespace
from .store.redis_errors import redis_call

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("mcp_keygate.http")
_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


# One event in, then the oldest out until the session's stream is within its count and bytes
# (the bytes of every event's message are counted beside the stream); both expire with the session.
_STORE = """
local id = redis.call('XADD', KEYS[1], '*', 's', ARGV[1], 'm', ARGV[2])
local total = redis.call('INCRBY', KEYS[2], #ARGV[2])
local max_events, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
while total > max_bytes or redis.call('XLEN', KEYS[1]) > max_events do
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  if first == nil or first[1] == id then break end
  local size = 0
  for i = 1, #first[2], 2 do if first[2][i] == 'm' then size = #first[2][i + 1] end end
  redis.call('XDEL', KEYS[1], first[1])
  total = redis.call('DECRBY', KEYS[2], size)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return id
"""


class RedisEventStore(EventStore):
    """One script call per event keeps a session's stream within `max_events_per_session` events
    and `max_bytes_per_session` bytes (oldest out first), expiring after `ttl_s` without events;
    replay is one XRANGE. While Redis cannot be reached, events go to a small store in
    memory instead (said once a minute in the log): a stream that cannot be kept must not stop
    the call itself, whose own error says what is wrong with Redis."""

    def __init__(
        self, redis: Redis, prefix: str, *, max_events_per_session: int, max_bytes_per_session: int, ttl_s: float
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.max_events = max_events_per_session
        self.max_bytes = max_bytes_per_session
        self.ttl_s = max(1, int(ttl_s))
        self._script = redis.register_script(_STORE)
        self.fallback = MemoryEventStore(max_events=1000, max_bytes=8 * 1024 * 1024)
        self._warned_at = -math.inf

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        try:
            return await self._store_in_redis(stream_id, message)
        except StoreError as exc:
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("stream events kept in memory for now: %s", exc)
            return await self.fallback.store_event(stream_id, message)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        if last_event_id.isdigit():  # an id the in-memory fallback gave out
            return await self.fallback.replay_events_after(last_event_id, send_callback)
        try:
            return await self._replay_from_redis(last_event_id, send_callback)
        except StoreError as exc:
            log.warning("cannot replay stream events: %s", exc)
            return None

    def _key(self, namespace: str) -> str:
        return f"{self.prefix}:resume:{{{namespace}}}"  # the hash tag keeps a session's keys in one slot

    @redis_call
    async def _store_in_redis(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        key = self._key(current_namespace())
        data = b"" if message is None else message.model_dump_json(by_alias=True, exclude_unset=True).encode()
        args: list[Any] = [stream_id, data, self.max_events, self.max_bytes, self.ttl_s]
        added = await self._script(keys=[key, f"{key}:bytes"], args=args)
        return _text(added)

    @redis_call
    async def _replay_from_redis(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        if not _STREAM_ID.fullmatch(last_event_id):
            return None  # not an id this store gave out
        key = self._key(current_namespace())
        entries = [(_text(i), fields or {}) for i, fields in (await self.redis.xrange(key, min=last_event_id) or [])]
        if not entries or entries[0][0] != last_event_id:
            return None
        stream_id = _text(entries[0][1].get(b"s"))
        for event_id, fields in entries[1:]:
            data = fields.get(b"m")
            if _text(fields.get(b"s")) == stream_id and data:
                message = jsonrpc_message_adapter.validate_json(data, by_name=False)
                await send_callback(EventMessage(message, event_id))
        return stream_id


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")
