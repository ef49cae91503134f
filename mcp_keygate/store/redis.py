"""The shared store for several instances: conversations and key records in Redis.

Appending a call's turns is one optimistic transaction (WATCH the conversation, MULTI/EXEC), so a
conversation never holds half a call and two instances never interleave one call's turns with
another's numbering. Key records are written by `RedisKeyPool` itself; this store reads them
for `status`.

Layout (prefix P): `P:conv:<id>` meta hash (owner, created_at, updated_at, turns),
`P:conv:<id>:turns` the turns (list of JSON), `P:owner:<owner>:convs` ids by last update.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from ..auth import LOCAL_OWNER
from ..keys.state import KeyRecord
from ..messages import Turn
from .base import ConversationConflict, ConversationInfo


class RedisStore:
    def __init__(self, redis: Redis, prefix: str = "keygate") -> None:
        self.redis = redis
        self.prefix = prefix

    def _meta(self, conversation_id: str) -> str:
        return f"{self.prefix}:conv:{conversation_id}"

    async def open(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def save_keys(self, records: list[KeyRecord]) -> None:
        if not records:
            return
        pipe = self.redis.pipeline(transaction=True)
        for record in records:
            pipe.set(f"{self.prefix}:key:{record.key_id}", json.dumps(record.to_dict()))
            pipe.sadd(f"{self.prefix}:keys", record.key_id)
        await pipe.execute()

    async def load_keys(self) -> list[KeyRecord]:
        ids = sorted(
            k.decode() if isinstance(k, bytes) else k for k in await self.redis.smembers(f"{self.prefix}:keys")
        )
        if not ids:
            return []
        raws = await self.redis.mget([f"{self.prefix}:key:{i}" for i in ids])
        records = [KeyRecord.from_dict(json.loads(raw)) for raw in raws if raw]
        return sorted(records, key=lambda r: (r.provider, r.key_id))

    async def get_turns(self, conversation_id: str, owner: str = LOCAL_OWNER) -> list[Turn] | None:
        meta = self._meta(conversation_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(meta, "owner")
        pipe.lrange(f"{meta}:turns", 0, -1)
        found_owner, raws = await pipe.execute()
        if found_owner is None or _text(found_owner) != owner:
            return None
        return [Turn(**json.loads(raw)) for raw in raws]

    async def append_turns(
        self,
        conversation_id: str,
        turns: list[Turn],
        *,
        create: bool,
        owner: str = LOCAL_OWNER,
        keys: list[KeyRecord] | None = None,
    ) -> None:
        meta = self._meta(conversation_id)
        payload = [json.dumps(asdict(t)) for t in turns]
        while True:
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
                        pipe.set(f"{self.prefix}:key:{record.key_id}", json.dumps(record.to_dict()))
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    async def list_conversations(self, limit: int = 50, owner: str = LOCAL_OWNER) -> list[ConversationInfo]:
        ids = [_text(i) for i in await self.redis.zrevrange(f"{self.prefix}:owner:{owner}:convs", 0, limit - 1)]
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
