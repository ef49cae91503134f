"""One `complete` call as a value: what was asked, checked once, before anything is sent.

The MCP tool, a preset and the benchmarks all build a `CompleteRequest`; `checked_messages`
turns it into the new turns of the conversation or raises `InvalidRequest` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .attachments import Attachment
from .config import Config
from .errors import InvalidRequest
from .messages import Message
from .schemas import InputMessage
from .structured import checked_schema

DEFAULT_MAX_WAIT_S = 20.0


@dataclass(frozen=True, slots=True)
class CompleteRequest:
    """Exactly one of `prompt` or `messages`; everything else optional."""

    prompt: str | None = None
    messages: tuple[InputMessage, ...] | list[InputMessage] | None = None
    model: str = "default"
    conversation_id: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    preset: str | None = None  # the preset tool this call came from (policies may allow presets by name)
    response_schema: dict[str, Any] | None = None  # the answer must be JSON fitting this JSON Schema
    attachments: tuple[Attachment, ...] = ()  # files and images (read and checked by attachments.Gatherer)


def checked_messages(request: CompleteRequest, config: Config) -> list[Message]:
    """The call's new turns (system first, when given), after every check that needs no history —
    the messages first, then the model and the limits (the order callers have always seen)."""
    new = _new_messages(request)
    limits = config.limits
    if len(new) > limits.max_messages:
        raise InvalidRequest(f"messages: {len(new)} messages, the limit is {limits.max_messages}")
    for i, message in enumerate(new):
        if len(message.content) > limits.max_prompt_chars:
            where = "system" if message.role == "system" else f"messages[{i}].content (or prompt)"
            raise InvalidRequest(
                f"{where}: {len(message.content)} characters, the limit is {limits.max_prompt_chars} "
                "([limits] max_prompt_chars)"
            )
    if config.route(request.model) is None:
        names = sorted(set(config.route_names()) | set(config.models))
        raise InvalidRequest(
            f"model: unknown model or route {request.model[:100]!r}; known: {', '.join(names) or 'none configured'}"
        )
    if request.max_tokens is not None and request.max_tokens < 1:
        raise InvalidRequest(f"max_tokens: must be at least 1 (got {request.max_tokens})")
    if request.max_wait_s < 0:
        raise InvalidRequest(f"max_wait_s: must be 0 or more (got {request.max_wait_s})")
    if request.response_schema is not None:
        checked_schema(request.response_schema)
    return _attached(new, request.attachments)


def _attached(new: list[Message], attachments: tuple[Attachment, ...]) -> list[Message]:
    """The call's files and images go with its last user message."""
    if not attachments:
        return new
    last = max((i for i, m in enumerate(new) if m.role == "user"), default=None)
    if last is None:
        raise InvalidRequest("files/images: they go with a user message, and the call has none")
    message = new[last]
    new[last] = replace(message, attachments=message.attachments + attachments)
    return new


def _new_messages(request: CompleteRequest) -> list[Message]:
    prompt, messages = request.prompt, request.messages
    if (prompt is None) == (messages is None):
        raise InvalidRequest(
            "prompt/messages: give exactly one — `prompt` (a string) for a single user turn, "
            "or `messages` (a list of {role, content}) for several"
        )
    new: list[Message] = [Message("system", request.system)] if request.system else []
    if prompt is not None:
        if not prompt.strip():
            raise InvalidRequest("prompt: must not be empty")
        new.append(Message("user", prompt))
        return new
    if not messages:
        raise InvalidRequest("messages: must contain at least one message")
    new.extend(Message(m.role, m.content) for m in messages)
    return new
