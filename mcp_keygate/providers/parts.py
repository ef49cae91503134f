"""A user turn's files and images in each API's own parts.

- OpenAI: `text` parts, images as `image_url` data URLs, PDFs as `file` parts with `file_data`.
- Anthropic: `image` and `document` blocks with base64 sources (before the text, as Anthropic advises).
- Gemini: `inline_data` parts (`mime_type`, `data`).

A text file is a text part headed by its path in every API. An attachment whose bytes are no longer
stored becomes a line saying so, never a silent gap.
"""

from __future__ import annotations

import base64
from pathlib import PurePath
from typing import Any

from ..attachments import Attachment
from ..messages import Message


def _text_part(attachment: Attachment) -> str:
    if attachment.data is None:
        return f"[attachment {attachment.name} ({attachment.media_type}) is no longer stored]"
    return f"--- {attachment.name} ---\n{attachment.text()}"


def _b64(attachment: Attachment) -> str:
    return base64.b64encode(attachment.data or b"").decode("ascii")


def _sendable(attachment: Attachment) -> bool:
    return attachment.data is not None and attachment.kind != "text"


def openai_content(message: Message) -> str | list[dict[str, Any]]:
    if not message.attachments:
        return message.content
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content.strip() else []
    for a in message.attachments:
        if not _sendable(a):
            parts.append({"type": "text", "text": _text_part(a)})
        elif a.kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": f"data:{a.media_type};base64,{_b64(a)}"}})
        else:
            data_url = f"data:{a.media_type};base64,{_b64(a)}"
            parts.append({"type": "file", "file": {"filename": PurePath(a.name).name, "file_data": data_url}})
    return parts


def anthropic_content(message: Message) -> str | list[dict[str, Any]]:
    if not message.attachments:
        return message.content
    blocks: list[dict[str, Any]] = []
    for a in message.attachments:
        if not _sendable(a):
            blocks.append({"type": "text", "text": _text_part(a)})
        else:
            source = {"type": "base64", "media_type": a.media_type, "data": _b64(a)}
            blocks.append(
                {"type": "image", "source": source} if a.kind == "image" else {"type": "document", "source": source}
            )
    if message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    return blocks


def gemini_parts(message: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = (
        [{"text": message.content}] if message.content.strip() or not message.attachments else []
    )
    for a in message.attachments:
        if not _sendable(a):
            parts.append({"text": _text_part(a)})
        else:
            parts.append({"inline_data": {"mime_type": a.media_type, "data": _b64(a)}})
    return parts
