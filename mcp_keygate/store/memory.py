"""An in-process store for tests and throwaway runs; forgets everything on exit."""

from __future__ import annotations

import copy
import time

from ..attachments import Attachment
from ..auth import LOCAL_OWNER
from ..keys.budget import Budget, MoneyBudget, MoneySpend, Spend, try_spend, try_spend_money
from ..keys.state import KeyRecord
from ..messages import Turn
from .base import ConversationConflict, ConversationInfo, UsageRow


class MemoryStore:
    def __init__(self) -> None:
        self._keys: dict[str, dict] = {}
        self._conversations: dict[str, list[Turn]] = {}
        self._created: dict[str, float] = {}
        self._owner: dict[str, str] = {}
        self._usage: dict[tuple[str, str, str, str], list[float]] = {}
        self._budgets: dict[str, Spend] = {}
        self._money: dict[str, MoneySpend] = {}
        self._blobs: dict[str, bytes] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def save_keys(self, records: list[KeyRecord]) -> None:
        for record in records:
            self._keys[record.key_id] = record.to_dict()

    async def load_keys(self) -> list[KeyRecord]:
        return [KeyRecord.from_dict(copy.deepcopy(d)) for d in self._keys.values()]

    async def get_turns(self, conversation_id: str, owner: str = LOCAL_OWNER) -> list[Turn] | None:
        turns = self._conversations.get(conversation_id)
        if turns is None or self._owner[conversation_id] != owner:
            return None
        return list(turns)

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
        if create:
            if conversation_id in self._conversations:
                raise ConversationConflict(conversation_id)
            self._conversations[conversation_id] = []
            self._created[conversation_id] = time.time()
            self._owner[conversation_id] = owner
        elif self._owner.get(conversation_id) != owner:
            raise ConversationConflict(conversation_id)
        self._conversations[conversation_id].extend(turns)
        for blob in blobs or []:
            if blob.data is not None:
                self._blobs.setdefault(blob.sha256, blob.data)
        await self.save_keys(keys or [])
        if usage is not None:
            totals = self._usage.setdefault((usage.day, usage.owner, usage.model, usage.key_id), [0, 0, 0, 0.0, 0])
            totals[0] += usage.requests
            totals[1] += usage.input_tokens
            totals[2] += usage.output_tokens
            totals[3] += usage.cost_usd
            totals[4] += usage.unpriced

    async def list_conversations(self, limit: int = 50, owner: str = LOCAL_OWNER) -> list[ConversationInfo]:
        infos = [
            ConversationInfo(cid, self._created[cid], turns[-1].created_at if turns else self._created[cid], len(turns))
            for cid, turns in self._conversations.items()
            if self._owner[cid] == owner
        ]
        return sorted(infos, key=lambda i: i.updated_at, reverse=True)[:limit]

    async def ping(self) -> bool:
        return True

    async def load_blobs(self, hashes: list[str]) -> dict[str, bytes]:
        return {h: self._blobs[h] for h in hashes if h in self._blobs}

    async def blob_bytes(self) -> int:
        return sum(len(b) for b in self._blobs.values())

    async def load_usage(self, since_day: str, owner: str | None = None) -> list[UsageRow]:
        return sorted(
            (
                UsageRow(*key, int(totals[0]), int(totals[1]), int(totals[2]), totals[3], int(totals[4]))
                for key, totals in self._usage.items()
                if key[0] >= since_day and (owner is None or key[1] == owner)
            ),
            key=lambda row: (row.day, row.owner, row.model, row.key_id),
        )

    async def spend_budget(
        self, name: str, budget: Budget, now: float, requests: int, tokens: int, enforce: bool = True
    ) -> tuple[float, str]:
        return try_spend(self._budgets.setdefault(name, {}), budget, now, requests, tokens, enforce)

    async def spend_money(
        self, name: str, budget: MoneyBudget, now: float, amount: float, enforce: bool = True
    ) -> tuple[float, str]:
        return try_spend_money(self._money.setdefault(name, {}), budget, now, amount, enforce)
