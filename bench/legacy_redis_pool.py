"""The Redis key pool as it was before issue #17, kept only so `python -m bench.selection` can measure
old and new side by side. Not used by mcp-keygate itself.

The key pool shared by several instances through Redis.

Every instance sees a change at once: there is no local copy of key state. A lease and a state
transition are each one optimistic transaction (WATCH the records and the lease set, decide with
the same rules as the in-process pool, MULTI/EXEC; retry if another instance got there first), so
two instances never hand out the last request of a window twice. Leases carry an expiry, so a
crashed instance cannot keep a key busy for ever.

Layout (prefix P): `P:key:<key_id>` a key's record (JSON), `P:keys` the set of key ids,
`P:leases:<provider>` live leases (sorted set, score = expiry), `P:cursor:<provider>` round-robin.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import anyio
from redis.asyncio import Redis
from redis.exceptions import WatchError

from mcp_keygate.errors import PoolContention
from mcp_keygate.keys.base import Lease, Pick, PoolBase
from mcp_keygate.keys.rules import (
    Fit,
    PoolSettings,
    apply_verdict,
    candidates_for,
    charge_lease,
    choose,
    earliest_ready,
    no_lease,
    reset_record,
    settle_tokens,
)
from mcp_keygate.keys.secret import ApiKey
from mcp_keygate.keys.state import KeyRecord
from mcp_keygate.outcomes import Headroom, Verdict
from mcp_keygate.store.redis_errors import redis_call

MAX_TRIES = 200


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
        self._by_id = {k.key_id: k for ks in keys.values() for k in ks}
        self.lease_ttl_s = lease_ttl_s
        # Calls of this instance take turns to lease (cheap, local): optimistic transactions then only
        # race with other instances, not with each other.
        self._acquire_locks = {provider: anyio.Lock() for provider in keys}
        self._parsed: dict[str, tuple[Any, KeyRecord]] = {}

    # -- names ------------------------------------------------------------------------------

    def _record_key(self, key_id: str) -> str:
        return f"{self.prefix}:key:{key_id}"

    def _leases_key(self, provider: str) -> str:
        return f"{self.prefix}:leases:{provider}"

    def _parse_cached(self, key: ApiKey, raw: Any) -> KeyRecord:
        """The record for `raw`, parsed once per distinct value (a pick reads every key; most did not
        change since the last pick). Read-only: change a `_parse` copy instead."""
        cached = self._parsed.get(key.key_id)
        if cached is not None and cached[0] == raw:
            return cached[1]
        record = self._parse(key, raw)
        self._parsed[key.key_id] = (raw, record)
        return record

    def _parse(self, key: ApiKey, raw: Any) -> KeyRecord:
        if not raw:
            return self.fresh(key)
        record = KeyRecord.from_dict(json.loads(raw))
        record.mask, record.budget = key.mask, key.budget  # this instance's config, not what Redis holds
        return record

    # -- state in and out -------------------------------------------------------------------

    @redis_call
    async def open(self, store: Any = None) -> None:
        """Make every configured key visible (to `status` and the other instances)."""
        pipe = self.redis.pipeline(transaction=True)
        for key in self._by_id.values():
            pipe.set(self._record_key(key.key_id), json.dumps(self.fresh(key).to_dict()), nx=True)
            pipe.sadd(f"{self.prefix}:keys", key.key_id)
        await pipe.execute()
        # A budget changed in the config reaches the stored record now (what `status` reads), not at
        # the key's next write.
        keys = list(self._by_id.values())
        raws = await self.redis.mget([self._record_key(k.key_id) for k in keys])
        for key, raw in zip(keys, raws, strict=True):
            if raw and KeyRecord.from_dict(json.loads(raw)).budget != key.budget:
                await self._update(key, lambda record, now: None, None)

    @redis_call
    async def records(self, provider: str | None = None) -> list[KeyRecord]:
        keys = [k for name, ks in self._keys.items() if provider is None or name == provider for k in ks]
        if not keys:
            return []
        raws = await self.redis.mget([self._record_key(k.key_id) for k in keys])
        return [self._parse(k, raw) for k, raw in zip(keys, raws, strict=True)]

    def take_dirty(self, state_changes_only: bool = False) -> list[KeyRecord]:
        return []  # every change is already in Redis

    # -- choosing ---------------------------------------------------------------------------

    @redis_call
    async def acquire(self, provider: str, model: str, exclude: Iterable[str] = (), cost: int = 0) -> Pick:
        keys = self._keys.get(provider) or []
        if not keys:
            return Fit.HELD
        async with self._acquire_locks[provider]:
            return await self._acquire(provider, model, keys, exclude, cost)

    async def _acquire(self, provider: str, model: str, keys: list[ApiKey], exclude: Iterable[str], cost: int) -> Pick:
        skip = set(exclude)
        leases_key = self._leases_key(provider)
        record_keys = [self._record_key(k.key_id) for k in keys]
        cursor_key = f"{self.prefix}:cursor:{provider}"
        for _ in range(MAX_TRIES):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(leases_key, *record_keys)
                    now = self._clock()
                    raws = await pipe.mget(record_keys)
                    live = cast(list[bytes], await pipe.zrangebyscore(leases_key, now, math.inf))
                    cursor = int(await pipe.get(cursor_key) or 0)
                    in_flight, probing = _count(live, model)
                    records = [self._parse_cached(k, raw) for k, raw in zip(keys, raws, strict=True)]
                    ids = [(k.key_id, k.index) for k in keys]
                    candidates = candidates_for(ids, records, model, now, in_flight, probing, skip, cost)
                    chosen = choose(self.settings(provider).strategy, candidates, cursor, len(keys))
                    if chosen is None:
                        await pipe.reset()
                        return no_lease(candidates)
                    probe = chosen.fit is Fit.PROBE
                    ticket = f"{chosen.key_id}|{model}|{int(probe)}|{uuid.uuid4().hex}"
                    pipe.multi()
                    pipe.zremrangebyscore(leases_key, -math.inf, now)  # leases of crashed instances
                    pipe.zadd(leases_key, {ticket: now + self.lease_ttl_s})
                    pipe.set(cursor_key, (chosen.index + 1) % len(keys))
                    if records[chosen.index].budget:  # charged in the same transaction as the lease
                        record = self._parse(keys[chosen.index], raws[chosen.index])  # a copy to change
                        charge_lease(record, now, cost)
                        pipe.set(record_keys[chosen.index], json.dumps(record.to_dict()))
                    await pipe.execute()
                    return Lease(keys[chosen.index], model, probe, ticket, cost)
                except WatchError:
                    await anyio.sleep(random.uniform(0, 0.002))
        raise PoolContention(f"could not lease a key of {provider} after {MAX_TRIES} tries")

    async def ready_in(self, provider: str, model: str) -> float | None:
        return earliest_ready(await self.records(provider), model, self._clock())

    # -- learning ---------------------------------------------------------------------------

    @redis_call
    async def release(
        self, lease: Lease, verdict: Verdict, headroom: Headroom | None = None, used_tokens: int | None = None
    ) -> None:
        settings = self.settings(lease.key.provider)

        def change(record: KeyRecord, now: float) -> None:
            apply_verdict(record, lease.model, verdict, headroom, settings, now, lease.probe)
            settle_tokens(record, now, lease.cost, used_tokens)

        await self._update(lease.key, change, lease)

    @redis_call
    async def cancel(self, lease: Lease) -> None:
        await self.redis.zrem(self._leases_key(lease.key.provider), lease.ticket)

    @redis_call
    async def reset(self, key_id: str) -> bool:
        key = self._by_id.get(key_id)
        if key is None:
            return False
        await self._update(key, lambda record, now: reset_record(record), None)
        return True

    async def _update(self, key: ApiKey, change: Callable[[KeyRecord, float], None], lease: Lease | None) -> None:
        """Read-modify-write one record atomically (and end the lease in the same transaction)."""
        record_key = self._record_key(key.key_id)
        for _ in range(MAX_TRIES):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(record_key)
                    record = self._parse(key, await pipe.get(record_key))
                    change(record, self._clock())
                    pipe.multi()
                    pipe.set(record_key, json.dumps(record.to_dict()))
                    if lease is not None:
                        pipe.zrem(self._leases_key(key.provider), lease.ticket)
                    await pipe.execute()
                    return
                except WatchError:
                    await anyio.sleep(random.uniform(0, 0.002))
        raise PoolContention(f"could not update {key.key_id} after {MAX_TRIES} tries")


def _count(live: Sequence[bytes | str], model: str) -> tuple[dict[str, int], set[str]]:
    """Requests in flight per key for `model`, and the keys being probed, from the live leases."""
    in_flight: dict[str, int] = {}
    probing: set[str] = set()
    for raw in live:
        ticket = raw.decode() if isinstance(raw, bytes) else raw
        head, probe, _ = ticket.rsplit("|", 2)
        key_id, lease_model = head.split("|", 1)
        if lease_model != model:
            continue
        in_flight[key_id] = in_flight.get(key_id, 0) + 1
        if probe == "1":
            probing.add(key_id)
    return in_flight, probing
