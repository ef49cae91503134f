"""The Store protocol: where key state and conversations outlive the process.

A store saves what it is given and answers what it is asked; it knows nothing of providers,
HTTP or routing. Appending turns is atomic: a conversation never holds half a call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..attachments import Attachment
from ..auth import LOCAL_OWNER
from ..errors import CallError
from ..keys.budget import Budget, MoneyBudget
from ..keys.state import KeyRecord
from ..messages import Turn


class ConversationConflict(CallError):
    """The conversation changed under the call: a new id already existed, or the conversation went
    away (or changed owner) while the call ran. Nothing was stored; a retry is safe."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(
            f"conversation_id {conversation_id!r} changed while this call ran (created or removed by another "
            "call); nothing was stored — retry"
        )
        self.conversation_id = conversation_id


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    id: str
    created_at: float
    updated_at: float
    turns: int


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Tokens (and dollars) used by one caller (token name) on one model with one key, on one UTC day.

    `cost_usd` sums the priced requests; `unpriced` counts those whose price was unknown."""

    day: str  # YYYY-MM-DD
    owner: str
    model: str
    key_id: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float = 0.0
    unpriced: int = 0


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save_keys(self, records: list[KeyRecord]) -> None:
        """Upsert these key records (ids, masks, holds, counters — never secrets)."""

    async def load_keys(self) -> list[KeyRecord]: ...

    async def get_turns(self, conversation_id: str, owner: str = LOCAL_OWNER) -> list[Turn] | None:
        """The turns of `owner`'s conversation in order, or None when it does not exist for them."""

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
        """Append all turns, save `keys` and add `usage`, in one transaction; `create` starts `owner`'s new
        conversation. `blobs` (attachments with their bytes) are stored once per sha256."""

    async def load_blobs(self, hashes: list[str]) -> dict[str, bytes]:
        """The bytes of the stored attachments with these sha256 (those that exist)."""

    async def blob_bytes(self) -> int:
        """How many bytes of attachments the store holds (for `[limits] max_stored_attachment_bytes`)."""

    async def list_conversations(self, limit: int = 50, owner: str = LOCAL_OWNER) -> list[ConversationInfo]: ...

    async def ping(self) -> bool:
        """Whether the store answers (for /healthz)."""

    async def load_usage(self, since_day: str, owner: str | None = None) -> list[UsageRow]:
        """Usage rows from `since_day` on (one owner's, or everyone's)."""

    async def spend_budget(
        self, name: str, budget: Budget, now: float, requests: int, tokens: int, enforce: bool = True
    ) -> tuple[float, str]:
        """Atomically (across instances sharing the store): if `enforce` and the spend does not fit the
        budget, return (seconds until it does, why) and charge nothing; else charge it and return (0, "")."""

    async def spend_money(
        self, name: str, budget: MoneyBudget, now: float, amount: float, enforce: bool = True
    ) -> tuple[float, str]:
        """`spend_budget` for dollars (`keys.budget.try_spend_money`), as atomic across instances."""
