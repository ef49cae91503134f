"""One call of the pool's Lua script (`pool.lua`), and the returns that must not be lost.

The script is loaded once and run by its SHA (EVALSHA); after a Redis restart, which forgets
loaded scripts, redis-py loads it again by itself. Each call is atomic in Redis: applied whole or
not at all.

A release or cancel that Redis could not take (down, restarting, timed out) is kept here and
replayed, in order, before the next call once Redis answers again: otherwise the key would stay
"in flight" until its lease expired, long after Redis came back. Both are keyed by the lease id
and do nothing the second time, so replaying one that did reach Redis is harmless. A lease whose
reply was lost is cancelled the same way.
"""

from __future__ import annotations

import collections
from importlib import resources
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

SOURCE = resources.files(__package__).joinpath("pool.lua").read_text(encoding="utf-8")
MAX_PENDING = 100_000  # past this, the oldest are dropped (their leases expire by themselves)

Call = tuple[list[str], list[str]]
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class PoolScript:
    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(SOURCE)
        self._pending: collections.deque[Call] = collections.deque(maxlen=MAX_PENDING)
        self._replaying = anyio.Lock()

    async def __call__(self, keys: list[str], args: list[str]) -> Any:
        """Run the script once (after replaying what is pending)."""
        await self.flush()
        return await self._script(keys=keys, args=args)

    async def must_reach(self, keys: list[str], args: list[str]) -> Any:
        """Run a release or cancel; when Redis cannot be reached, keep it for replay and raise."""
        try:
            return await self(keys, args)
        except UNREACHABLE:
            self._pending.append((keys, args))
            raise

    def undo_later(self, keys: list[str], args: list[str]) -> None:
        """Replay `args` (a cancel) later: a call whose answer was lost may have been applied."""
        self._pending.append((keys, args))

    async def flush(self) -> None:
        """Replay what is pending, in order (a release before the cancel that followed it), one
        replayer at a time: the only lock here, and only while there is a backlog."""
        if not self._pending:
            return
        async with self._replaying:
            while self._pending:
                keys, args = self._pending[0]
                await self._script(keys=keys, args=args)
                self._pending.popleft()

    @property
    def pending(self) -> int:
        return len(self._pending)
