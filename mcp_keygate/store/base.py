"""The Store protocol: where key state and conversations outlive the process.

A store saves what it is given and answers what it is asked; it knows nothing of providers,
HTTP or routing. Appending turns is atomic: a conversation never holds half a call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..auth import LOCAL_OWNER
from ..keys.state import KeyRecord
from ..messages import Turn


class ConversationConflict(Exception):
    """A new conversation's id already exists."""


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    id: str
    created_at: float
    updated_at: float
    turns: int


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
    ) -> None:
        """Append all turns, and save `keys`, in one transaction; `create` starts `owner`'s new conversation."""

    async def list_conversations(self, limit: int = 50, owner: str = LOCAL_OWNER) -> list[ConversationInfo]: ...

    async def ping(self) -> bool:
        """Whether the store answers (for /healthz)."""
