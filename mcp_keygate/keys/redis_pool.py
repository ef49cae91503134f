"""The key pool shared by several instances through Redis.

Every decision is made inside Redis by one script call (`pool.lua`, the rules of `rules.py` and
the index of `index.py` written once more): a lease reads the few keys at the front of the
model's index, whatever the pool's size, and is atomic — two instances, or two calls of one
instance, never book the same last request of a window, and nothing is retried because some
other key changed. There is no local lock and no local copy of key state: concurrent calls of
one instance lease concurrently. Leases carry an expiry, so a crashed instance cannot keep a key
busy for ever. Layout: `redis_layout.py`.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import anyio
from redis.asyncio import Redis

from ..errors import StoreError
from ..outcomes import LONG_WAIT_S, Headroom, Verdict
from ..store.redis_errors import redis_call
from .base import Lease, Pick, PoolBase
from .redis_layout import CHUNK, ProviderNames, fresh_json, layout_of
from .redis_script import UNREACHABLE, PoolScript
from .rules import Fit, PoolSettings
from .secret import ApiKey
from .state import KeyRecord

_FITS = {"busy": Fit.BUSY, "held": Fit.HELD}


class RedisKeyPool(PoolBase):
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        keys: dict[str, list[ApiKey]],
        settings: dict[str, PoolSettings] | None = None,
        clock: Callable[[], float] = time.time,
        lease_ttl_s: float = 300.0,
    ) -> None:
        super().__init__(keys, settings, clock)
        self.redis = redis
        self.prefix = prefix
        self.lease_ttl_s = lease_ttl_s
        self._by_id = {k.key_id: k for ks in keys.values() for k in ks}
        self._names = {provider: ProviderNames(prefix, provider) for provider in keys}
        self._script = PoolScript(redis)

    def _args(self, op: str, provider: str, *rest: object) -> list[str]:
        return [op, self._names[provider].base, repr(float(self._clock())), provider, *map(_text, rest)]

    # -- state in and out -------------------------------------------------------------------

    @redis_call
    async def open(self, store: Any = None) -> None:
        """Make the key list in Redis match the configuration (visible to `status` and the other
        instances); records already there keep their state, and take the configured budget."""
        for provider, keys in self._keys.items():
            await self._open_provider(provider, keys)

    async def _open_provider(self, provider: str, keys: list[ApiKey]) -> None:
        names = self._names[provider]
        layout = layout_of(keys, self.settings(provider).strategy)
        stored = await self.redis.get(names.layout)
        if stored is not None and _text(stored) == layout and await self.redis.exists(names.fixed()[0]):
            return
        old: list[Any] = [None] * len(keys)
        if stored is None and keys:  # first open under hash tags: adopt the records of the old layout
            pipe = self.redis.pipeline(transaction=False)  # one slot each (Redis Cluster): no MGET
            for key in keys:
                pipe.get(f"{self.prefix}:key:{key.key_id}")
            old = await pipe.execute()
        fixed = names.fixed()
        await self._script(fixed, self._args("drop_indexes", provider))
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            args = [x for i, k in enumerate(chunk, start) for x in (k.key_id, k.index, fresh_json(k, old[i]))]
            await self._script(fixed, self._args("add_keys", provider, *args))
            await self.redis.sadd(f"{self.prefix}:keys", *(k.key_id for k in chunk))
        await self.redis.set(names.layout, layout)

    async def reconfigure(self, keys: dict[str, list[ApiKey]], settings: dict[str, PoolSettings]) -> None:
        """A reloaded config's keys: the state of every key lives in Redis under its id, so keys still
        configured keep it, new ones are listed fresh, removed ones are no longer leased."""
        self._keys, self._settings = keys, settings
        self._by_id = {k.key_id: k for ks in keys.values() for k in ks}
        self._names = {provider: ProviderNames(self.prefix, provider) for provider in keys}
        await self.open()

    @redis_call
    async def records(self, provider: str | None = None) -> list[KeyRecord]:
        out: list[KeyRecord] = []
        for name, keys in self._keys.items():
            if (provider is not None and name != provider) or not keys:
                continue
            raws = await self.redis.mget([self._names[name].record(k.key_id) for k in keys])
            out.extend(self._parse(k, raw) for k, raw in zip(keys, raws, strict=True))
        return out

    def _parse(self, key: ApiKey, raw: Any) -> KeyRecord:
        record = self.fresh(key) if not raw else KeyRecord.from_dict(_json(raw))
        record.mask, record.budget = key.mask, key.budget  # this instance's config, not what Redis holds
        return record

    def take_dirty(self, state_changes_only: bool = False) -> list[KeyRecord]:
        return []  # every change is already in Redis

    # -- choosing ---------------------------------------------------------------------------

    @redis_call
    async def acquire(self, provider: str, model: str, exclude: Iterable[str] = (), cost: int = 0) -> Pick:
        keys = self._keys.get(provider) or []
        if not keys:
            return Fit.HELD
        skip = list(exclude)
        for _ in range(3):
            reply = await self._acquire_once(provider, model, skip, cost)
            kind = _text(reply[0])
            if kind == "closed":  # Redis lost the key list (restarted empty): write it again
                await self._open_provider(provider, keys)
                continue
            if kind != "lease":
                return _FITS[kind]
            key = self._by_id.get(_text(reply[1]))
            lease_id, probe = _text(reply[3]), int(reply[2]) == 1
            if key is None or key.provider != provider:  # another instance's config: not ours to use
                await self._script.must_reach(self._names[provider].fixed(), self._args("cancel", provider, lease_id))
                skip.append(_text(reply[1]))
                continue
            return Lease(key, model, probe, lease_id, cost)
        raise StoreError(f"the key list of {provider} in Redis does not match this configuration")

    async def _acquire_once(self, provider: str, model: str, skip: list[str], cost: int) -> list[Any]:
        lease_id = uuid.uuid4().hex
        settings = self.settings(provider)
        expiry = self._clock() + self.lease_ttl_s
        count = len(self._keys[provider])
        names = self._names[provider]
        args = self._args("acquire", provider, model, cost, settings.strategy, count, lease_id, repr(expiry), *skip)
        try:
            reply = await self._script(names.for_model(model), args)
        except (*UNREACHABLE, anyio.get_cancelled_exc_class()):
            # Redis may have booked the lease without our hearing it (timeout, or the call was
            # cancelled meanwhile): give it back with the next call, rather than when it expires.
            self._script.undo_later(names.fixed(), self._args("cancel", provider, lease_id))
            raise
        return [*reply, lease_id]

    @redis_call
    async def ready_in(self, provider: str, model: str) -> float | None:
        keys = self._keys.get(provider) or []
        if not keys:
            return None
        strategy = self.settings(provider).strategy
        names = self._names[provider]
        reply = _text(await self._script(names.for_model(model), self._args("ready_in", provider, model, strategy)))
        if reply == "closed":
            await self._open_provider(provider, keys)
            return await self.ready_in(provider, model)
        return None if reply == "none" else float(reply)

    # -- learning ---------------------------------------------------------------------------

    @redis_call
    async def release(
        self, lease: Lease, verdict: Verdict, headroom: Headroom | None = None, used_tokens: int | None = None
    ) -> None:
        provider = lease.key.provider
        settings = self.settings(provider)
        h = headroom or Headroom()
        args = self._args(
            "release",
            provider,
            lease.ticket,
            verdict.outcome.value,
            verdict.status_code,
            verdict.retry_after_s,
            verdict.reason,
            int(headroom is not None),
            h.limit_requests,
            h.remaining_requests,
            h.reset_requests_s,
            settings.cooldown_s,
            settings.max_cooldown_s,
            settings.quota_cooldown_s,
            LONG_WAIT_S,
            lease.cost,
            used_tokens,
        )
        await self._script.must_reach(self._names[provider].fixed(), args)

    @redis_call
    async def cancel(self, lease: Lease) -> None:
        provider = lease.key.provider
        await self._script.must_reach(self._names[provider].fixed(), self._args("cancel", provider, lease.ticket))

    @redis_call
    async def reset(self, key_id: str) -> bool:
        key = self._by_id.get(key_id)
        if key is None:
            return False
        strategy = self.settings(key.provider).strategy
        args = self._args("reset", key.provider, key_id, strategy)
        return bool(await self._script(self._names[key.provider].fixed(), args))


def _text(value: object) -> str:
    """A script argument or reply as text (floats exactly: repr round-trips)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    return str(value)


def _json(raw: bytes | str) -> Any:
    return json.loads(raw)
