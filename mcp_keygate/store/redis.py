"""The shared store for several instances: conversations and key records in Redis.

Appending a call's turns is one optimistic transaction (WATCH the conversation, MULTI/EXEC), so a
conversation never holds half a call and two instances never interleave one call's turns with
another's numbering. Key records are written by `RedisKeyPool` itself; this store reads them
for `status` (`keys/redis_layout.py` says where they are).

Layout (prefix P): `P:conv:<id>` meta hash (owner, created_at, updated_at, turns),
`P:conv:<id>:turns` the turns (list of JSON), `P:owner:<owner>:convs` ids by last update,
`P:usage:<day>` usage counters (hash), `P:budget:<name>` a caller's budget spend (JSON).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from ..attachments import Attachment
from ..auth import LOCAL_OWNER
from ..errors import PoolContention
from ..keys.budget import Budget, MoneyBudget, try_spend, try_spend_money
from ..keys.redis_layout import record_name
from ..keys.state import KeyRecord
from ..messages import Turn
from .base import ConversationConflict, ConversationInfo, UsageRow
from .redis_errors import redis_call

_FIELD_SEP = "\x1f"
MAX_TRIES = 200  # optimistic transactions retried this often before giving up


class RedisStore:
    def __init__(self, redis: Redis, prefix: str = "keygate") -> None:
        self.redis = redis
        self.prefix = prefix

    def _meta(self, conversation_id: str) -> str:
        return f"{self.prefix}:conv:{conversation_id}"

    @redis_call
    async def open(self) -> None:
        await self.redis.ping()

    @redis_call
    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    @redis_call
    async def save_keys(self, records: list[KeyRecord]) -> None:
        if not records:
            return
        pipe = self.redis.pipeline(transaction=False)  # one slot per provider: no cross-slot transaction
        for record in records:
            pipe.set(record_name(self.prefix, record.key_id, record.provider), json.dumps(record.to_dict()))
            pipe.sadd(f"{self.prefix}:keys", record.key_id)
        await pipe.execute()

    @redis_call
    async def load_keys(self) -> list[KeyRecord]:
        ids = sorted(
            k.decode() if isinstance(k, bytes) else k for k in await self.redis.smembers(f"{self.prefix}:keys")
        )
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key_id in ids:
            pipe.get(record_name(self.prefix, key_id))
        records = [KeyRecord.from_dict(json.loads(raw)) for raw in await pipe.execute() if raw]
        return sorted(records, key=lambda r: (r.provider, r.key_id))

    @redis_call
    async def get_turns(self, conversation_id: str, owner: str = LOCAL_OWNER) -> list[Turn] | None:
        meta = self._meta(conversation_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(meta, "owner")
        pipe.lrange(f"{meta}:turns", 0, -1)
        found_owner, raws = await pipe.execute()
        if found_owner is None or _text(found_owner) != owner:
            return None
        return [_turn(json.loads(raw)) for raw in raws]

    @redis_call
    async def append_turns(
        self,
        conversation_id: str,
        turns: list[Turn],
        *,
        create: bool,
        owner: str = LOCAL_OWNER,
        keys: list[KeyRecord] | None = None,
        usage: UsageRow | None = None,
        blobs: list[Attachment] | None = None,
    ) -> None:
        meta = self._meta(conversation_id)
        payload = [json.dumps({**asdict(t), "attachments": [a.to_dict() for a in t.attachments]}) for t in turns]
        for blob in blobs or []:  # content-addressed: written once, before the turns that name them
            if blob.data is not None and await self.redis.set(f"{self.prefix}:blob:{blob.sha256}", blob.data, nx=True):
                await self.redis.incrby(f"{self.prefix}:blobs:bytes", blob.size)
        for _ in range(MAX_TRIES):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(meta)
                    found_owner = await pipe.hget(meta, "owner")
                    if create and found_owner is not None:
                        raise ConversationConflict(conversation_id)
                    if not create and (found_owner is None or _text(found_owner) != owner):
                        raise ConversationConflict(conversation_id)
                    now = time.time()
                    pipe.multi()
                    if create:
                        pipe.hset(meta, mapping={"owner": owner, "created_at": now, "turns": 0})
                    pipe.hset(meta, "updated_at", now)
                    pipe.hincrby(meta, "turns", len(turns))
                    if payload:
                        pipe.rpush(f"{meta}:turns", *payload)
                    pipe.zadd(f"{self.prefix}:owner:{owner}:convs", {conversation_id: now})
                    for record in keys or []:
                        pipe.set(record_name(self.prefix, record.key_id, record.provider), json.dumps(record.to_dict()))
                    if usage is not None:
                        where = f"{self.prefix}:usage:{usage.day}"
                        head = _FIELD_SEP.join((usage.owner, usage.model, usage.key_id))
                        pipe.hincrby(where, f"{head}{_FIELD_SEP}requests", usage.requests)
                        pipe.hincrby(where, f"{head}{_FIELD_SEP}input_tokens", usage.input_tokens)
                        pipe.hincrby(where, f"{head}{_FIELD_SEP}output_tokens", usage.output_tokens)
                        # Always written (0 too): a row without it predates costs, and its cost is unknown.
                        pipe.hincrbyfloat(where, f"{head}{_FIELD_SEP}cost_usd", usage.cost_usd)
                        if usage.unpriced:
                            pipe.hincrby(where, f"{head}{_FIELD_SEP}unpriced", usage.unpriced)
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise PoolContention(f"could not store the turns of {conversation_id} after {MAX_TRIES} tries")

    @redis_call
    async def load_usage(self, since_day: str, owner: str | None = None) -> list[UsageRow]:
        prefix = f"{self.prefix}:usage:"
        found = [_text(k)[len(prefix) :] async for k in self.redis.scan_iter(f"{prefix}*")]
        days = sorted(day for day in found if day >= since_day)
        rows = []
        for day in days:
            totals: dict[tuple[str, str, str], dict[str, float]] = {}
            for field, value in (await self.redis.hgetall(f"{prefix}{day}")).items():
                who, model, key_id, name = _text(field).split(_FIELD_SEP)
                if owner is None or who == owner:
                    totals.setdefault((who, model, key_id), {})[name] = float(value)
            for (who, model, key_id), counts in sorted(totals.items()):
                rows.append(
                    UsageRow(
                        day,
                        who,
                        model,
                        key_id,
                        int(counts.get("requests", 0)),
                        int(counts.get("input_tokens", 0)),
                        int(counts.get("output_tokens", 0)),
                        counts.get("cost_usd", 0.0),
                        int(counts.get("unpriced", 0) if "cost_usd" in counts else counts.get("requests", 0)),
                    )
                )
        return rows

    @redis_call
    async def spend_budget(
        self, name: str, budget: Budget, now: float, requests: int, tokens: int, enforce: bool = True
    ) -> tuple[float, str]:
        def spend(state: dict) -> tuple[float, str]:
            return try_spend(state, budget, now, requests, tokens, enforce)

        return await self._charge(f"{self.prefix}:budget:{name}", spend, 2 * 86_400, name)

    @redis_call
    async def spend_money(
        self, name: str, budget: MoneyBudget, now: float, amount: float, enforce: bool = True
    ) -> tuple[float, str]:
        def spend(state: dict) -> tuple[float, str]:
            return try_spend_money(state, budget, now, amount, enforce)

        # Kept a month and a day: the longest money window, and a day to spare.
        return await self._charge(f"{self.prefix}:budget:usd:{name}", spend, 32 * 86_400, name)

    async def _charge(
        self, key: str, spend: Callable[[dict], tuple[float, str]], ttl: int, name: str
    ) -> tuple[float, str]:
        """One optimistic transaction on a budget's JSON state: `spend` charges it (returning (0, ""))
        or refuses (a wait and why, nothing written)."""
        for _ in range(MAX_TRIES):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    state = json.loads(raw) if raw else {}
                    verdict = spend(state)
                    if verdict[0] > 0:
                        await pipe.reset()
                        return verdict
                    pipe.multi()
                    pipe.set(key, json.dumps(state), ex=ttl)
                    await pipe.execute()
                    return verdict
                except WatchError:
                    continue
        raise PoolContention(f"could not charge the budget of {name} after {MAX_TRIES} tries")

    @redis_call
    async def load_blobs(self, hashes: list[str]) -> dict[str, bytes]:
        if not hashes:
            return {}
        raws = await self.redis.mget([f"{self.prefix}:blob:{h}" for h in hashes])
        return {h: raw if isinstance(raw, bytes) else raw.encode() for h, raw in zip(hashes, raws, strict=True) if raw}

    @redis_call
    async def blob_bytes(self) -> int:
        return int(await self.redis.get(f"{self.prefix}:blobs:bytes") or 0)

    @redis_call
    async def list_conversations(self, limit: int = 50, owner: str = LOCAL_OWNER) -> list[ConversationInfo]:
        newest = await self.redis.zrevrange(f"{self.prefix}:owner:{owner}:convs", 0, limit - 1)
        ids = [_text(i) for i in cast(list[bytes], newest)]
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hgetall(self._meta(cid))
        infos = []
        for cid, meta in zip(ids, await pipe.execute(), strict=True):
            meta = {_text(k): _text(v) for k, v in meta.items()}
            infos.append(
                ConversationInfo(cid, float(meta["created_at"]), float(meta["updated_at"]), int(meta["turns"]))
            )
        return infos


def _turn(data: dict) -> Turn:
    attachments = tuple(Attachment.from_dict(a) for a in data.pop("attachments", None) or [])
    return Turn(**data, attachments=attachments)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
