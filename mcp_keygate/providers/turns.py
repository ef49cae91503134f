"""Shaping a neutral history for APIs that demand strict turn-taking (Anthropic, Gemini).

Both want: the system prompt apart, user and assistant strictly alternating, a user turn first,
no empty turns. Nothing the user said is dropped: same-role neighbours are merged.
"""

from __future__ import annotations

from ..messages import Message

CONTINUATION = "(The conversation so far continues below.)"


def split_system(messages: list[Message]) -> tuple[str | None, list[Message]]:
    """The system prompts joined (in order), and every other message."""
    system = [m.content for m in messages if m.role == "system" and m.content.strip()]
    rest = [m for m in messages if m.role != "system"]
    return ("\n\n".join(system) if system else None), rest


def alternating(messages: list[Message]) -> list[Message]:
    """User/assistant turns that alternate and start with the user, with no empty turn."""
    shaped: list[Message] = []
    for message in messages:
        if not message.content.strip() and not message.attachments:
            continue  # an empty assistant (or user) turn carries nothing and is rejected upstream
        if shaped and shaped[-1].role == message.role:
            last = shaped[-1]
            joined = "\n\n".join(t for t in (last.content, message.content) if t.strip())
            shaped[-1] = Message(message.role, joined, last.attachments + message.attachments)
        else:
            shaped.append(message)
    if shaped and shaped[0].role != "user":
        shaped.insert(0, Message("user", CONTINUATION))
    return shaped
