"""Conversations: ids, loading history, and building what the next model is sent.

History is stored provider-neutral; the system prompt in effect is the latest system turn, and
it always goes first. A call's turns are written only when the call succeeds, in one transaction.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import replace

from .attachments import Attachment
from .config import LimitsConfig
from .errors import CallError, InvalidRequest
from .messages import Message, Turn
from .store import Store

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class UnknownConversation(CallError):
    CONTINUING = "omit conversation_id to start a new conversation (its id is returned in the result)"
    LOOKING = "list_conversations shows the conversations you can read"

    def __init__(self, conversation_id: str, hint: str = CONTINUING) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"conversation_id {conversation_id!r} does not exist; {hint}")


class InvalidConversationId(InvalidRequest):
    """A conversation id that cannot be one of ours (wrong characters or length)."""


def new_conversation_id() -> str:
    return "c_" + secrets.token_hex(8)


def validate_conversation_id(conversation_id: str) -> str:
    if not _ID.match(conversation_id):
        raise InvalidConversationId(
            "conversation_id must be 1-128 characters of letters, digits, '_', '-', '.', ':' "
            f"starting with a letter or digit (got {conversation_id[:40]!r})"
        )
    return conversation_id


async def load_history(store: Store, conversation_id: str, owner: str) -> list[Turn]:
    """The history, if `owner` may see it; another client's conversation does not exist for them."""
    turns = await store.get_turns(validate_conversation_id(conversation_id), owner)
    if turns is None:
        raise UnknownConversation(conversation_id)
    return turns


def request_messages(history: list[Turn], new: list[Message]) -> list[Message]:
    """The full context for the next call: the latest system prompt first, then every other turn."""
    system = None
    rest: list[Message] = []
    for message in [t.as_message() for t in history] + new:
        if message.role == "system":
            system = message
        else:
            rest.append(message)
    return ([system] if system else []) + rest


async def with_attachment_bytes(store: Store, history: list[Turn]) -> list[Turn]:
    """The history with its attachments' bytes loaded (a fallback model later in the conversation
    receives them too); one store read for the whole history."""
    wanted = sorted({a.sha256 for t in history for a in t.attachments})
    if not wanted:
        return history
    found = await store.load_blobs(wanted)
    return [
        replace(t, attachments=tuple(replace(a, data=found.get(a.sha256)) for a in t.attachments))
        if t.attachments
        else t
        for t in history
    ]


async def check_room(store: Store, new: list[Message], limits: LimitsConfig) -> list[Attachment]:
    """The call's attachments that are not stored yet, if the store has room for them (else InvalidRequest)."""
    attachments = list({a.sha256: a for m in new for a in m.attachments}.values())
    if not attachments:
        return []
    stored = await store.load_blobs([a.sha256 for a in attachments])
    fresh = [a for a in attachments if a.sha256 not in stored]
    adding = sum(a.size for a in fresh)
    if adding and await store.blob_bytes() + adding > limits.max_stored_attachment_bytes:
        raise InvalidRequest(
            f"files/images: the state store already holds its limit of attachments "
            f"([limits] max_stored_attachment_bytes = {limits.max_stored_attachment_bytes}); "
            "an operator can raise it, or send the call without files"
        )
    return fresh
