"""The last hour, for the /status page's pictures: per-minute counters per model (attempts, rate
limits, fallbacks) and each key's state changes.

A `HistoryRecorder` observes every attempt and fallback (in memory, no await on the hot path),
and every few seconds writes the counts and samples each key's state into a `HistoryStore`:
in this process's memory, or in Redis with the Redis backend, so every instance draws the same
pictures. Both are bounded: an hour and a bit of minutes, and at most `MAX_CHANGES` state changes
per key. (With SQLite the history is this process's: it starts empty after a restart.)
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .errors import StoreError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .schemas import KeyStatusRow

log = logging.getLogger("mcp_keygate.http")

KEEP_S = 3900  # an hour, and the minute being filled
MAX_CHANGES = 200
SAMPLE_S = 5.0
WARN_EVERY_S = 60.0
COUNTERS = ("attempts", "rate_limited", "fallbacks")
SEVERITY = {"ready": 0, "cooling": 1, "exhausted": 2, "disabled": 3}

# minute (epoch // 60) → model → counter → n
Minutes = dict[int, dict[str, dict[str, int]]]
# key id → [(since, state, reason)], oldest first
Changes = dict[str, list[tuple[float, str, str]]]


class HistoryStore(Protocol):
    async def add_counts(self, counts: Counter[tuple[int, str, str]]) -> None: ...

    async def note_state(self, key_id: str, state: str, reason: str, at: float) -> None:
        """Record a change, if the key's state is not already `state`."""

    async def minutes(self, since_minute: int) -> Minutes: ...

    async def changes(self, key_ids: list[str]) -> Changes: ...


class MemoryHistory:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._minutes: Minutes = {}
        self._changes: dict[str, deque[tuple[float, str, str]]] = defaultdict(lambda: deque(maxlen=MAX_CHANGES))

    async def add_counts(self, counts: Counter[tuple[int, str, str]]) -> None:
        for (minute, model, counter), n in counts.items():
            bucket = self._minutes.setdefault(minute, {}).setdefault(model, {})
            bucket[counter] = bucket.get(counter, 0) + n
        oldest = int((self._clock() - KEEP_S) // 60)
        for minute in [m for m in self._minutes if m < oldest]:
            del self._minutes[minute]

    async def note_state(self, key_id: str, state: str, reason: str, at: float) -> None:
        changes = self._changes[key_id]
        if not changes or changes[-1][1] != state:
            changes.append((at, state, reason))

    async def minutes(self, since_minute: int) -> Minutes:
        return {m: counts for m, counts in self._minutes.items() if m >= since_minute}

    async def changes(self, key_ids: list[str]) -> Changes:
        return {k: list(self._changes[k]) for k in key_ids if k in self._changes}


class RedisHistory:
    """Minutes as hashes (`model|counter` → n) expiring after two hours; per key, the last state
    (SET … GET decides, across instances, who records a change) and a capped list of changes."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    async def add_counts(self, counts: Counter[tuple[int, str, str]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for (minute, model, counter), n in counts.items():
                pipe.hincrby(f"{self.prefix}:hist:m:{minute}", f"{model}|{counter}", n)
                pipe.expire(f"{self.prefix}:hist:m:{minute}", 7200)
            await pipe.execute()

    async def note_state(self, key_id: str, state: str, reason: str, at: float) -> None:
        before = await self.redis.set(f"{self.prefix}:hist:last:{key_id}", state, get=True)
        if before is not None and (before.decode() if isinstance(before, bytes) else before) == state:
            return
        changes = f"{self.prefix}:hist:s:{key_id}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(changes, json.dumps([at, state, reason]))
            pipe.ltrim(changes, -MAX_CHANGES, -1)
            await pipe.execute()

    async def minutes(self, since_minute: int) -> Minutes:
        now_minute = int(time.time() // 60)
        span = list(range(since_minute, now_minute + 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in span:
                pipe.hgetall(f"{self.prefix}:hist:m:{minute}")
            found = await pipe.execute()
        result: Minutes = {}
        for minute, fields in zip(span, found, strict=True):
            for field, n in (fields or {}).items():
                model, _, counter = _text(field).rpartition("|")
                result.setdefault(minute, {}).setdefault(model, {})[counter] = int(n)
        return result

    async def changes(self, key_ids: list[str]) -> Changes:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key_id in key_ids:
                pipe.lrange(f"{self.prefix}:hist:s:{key_id}", 0, -1)
            found = await pipe.execute()
        return {k: [tuple(json.loads(v)) for v in items] for k, items in zip(key_ids, found, strict=True) if items}


class HistoryRecorder:
    """A RouterObserver that counts per minute, plus the task that writes counts and samples key
    states every `SAMPLE_S` seconds."""

    def __init__(self, store: HistoryStore, key_rows: Callable[[], Awaitable[list[KeyStatusRow]]]) -> None:
        self.store = store
        self.key_rows = key_rows
        self._pending: Counter[tuple[int, str, str]] = Counter()

    def on_attempt(self, provider: str, model: str, key_id: str, outcome: str, seconds: float) -> None:
        minute = int(time.time() // 60)
        self._pending[(minute, model, "attempts")] += 1
        if outcome == "rate_limited":
            self._pending[(minute, model, "rate_limited")] += 1

    def on_fallback(self, from_model: str, to_model: str) -> None:
        self._pending[(int(time.time() // 60), from_model, "fallbacks")] += 1

    async def flush(self) -> None:
        """Write the counts so far and the keys' states now."""
        pending, self._pending = self._pending, Counter()
        if pending:
            await self.store.add_counts(pending)
        worst: dict[str, KeyStatusRow] = {}
        for row in await self.key_rows():
            held = worst.get(row.key_id)
            if held is None or SEVERITY.get(row.state, 0) > SEVERITY.get(held.state, 0):
                worst[row.key_id] = row
        now = time.time()
        for key_id, row in worst.items():
            await self.store.note_state(key_id, row.state, row.reason or "", now)

    async def run(self) -> None:
        while True:
            try:
                await self.flush()
            except StoreError as exc:  # Redis away: the page says so; the counts of the gap are lost
                log.warning("status history not recorded: %s", exc)
            except Exception as exc:
                log.warning("status history not recorded: %s", type(exc).__name__)
            await anyio.sleep(SAMPLE_S)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
