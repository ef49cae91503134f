"""Provider-neutral conversation types: what is stored, replayed and translated per API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .attachments import Attachment

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str
    attachments: tuple[Attachment, ...] = ()  # files and images of a user turn, with their bytes


@dataclass(frozen=True, slots=True)
class Turn:
    """A stored message plus who answered it (assistant turns only). Attachments are references
    (name, media type, sha256, size); their bytes are stored once, apart, by hash."""

    role: Role
    content: str
    model: str | None = None
    provider: str | None = None
    key_id: str | None = None
    created_at: float = 0.0
    attachments: tuple[Attachment, ...] = ()

    def as_message(self) -> Message:
        return Message(self.role, self.content, self.attachments)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """A complete (never truncated) answer from one upstream call."""

    text: str
    finish_reason: str
    usage: Usage = field(default_factory=Usage)
    upstream_model: str = ""
    data: Any = None  # a structured answer: the text parsed as JSON and checked against the schema
