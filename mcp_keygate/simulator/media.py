"""Files and images in requests, as the three APIs check them: base64 that decodes, a media type the
API takes, and bytes that are what the media type says. Each accepted file is logged by size and
sha256, so tests can prove the exact bytes arrived."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_MAGIC = {
    "image/png": lambda d: d.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": lambda d: d.startswith(b"\xff\xd8\xff"),
    "image/gif": lambda d: d.startswith((b"GIF87a", b"GIF89a")),
    "image/webp": lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP",
    "application/pdf": lambda d: d.startswith(b"%PDF-"),
}
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.S)


class MediaError(ValueError):
    """The file part is not what the API accepts; the message is the API's kind of message."""


def decoded(data: Any, media_type: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Check one base64 file; return what the log records about it."""
    if media_type not in allowed:
        raise MediaError(f"media_type: Input should be {', '.join(repr(t) for t in allowed)}")
    if not isinstance(data, str):
        raise MediaError("data: Input should be a valid string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError("data: invalid base64 data") from None
    check = _MAGIC.get(media_type)
    if check is not None and not check(raw):
        raise MediaError(f"The image data does not match the provided media type {media_type}")
    return {"media_type": media_type, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def data_url(url: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    match = _DATA_URL.match(url) if isinstance(url, str) else None
    if match is None:
        raise MediaError("Invalid image URL: expected a data URL (data:<media type>;base64,<data>)")
    return decoded(match.group(2), match.group(1), allowed)


def openai_parts(content: Any, role: str) -> tuple[str, list[dict[str, Any]]]:
    """A Chat Completions message content (a string, or a list of parts): its text and its files."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list) or not content:
        raise MediaError("'content' must be a string or a non-empty array of content parts")
    texts, files = [], []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and role == "user":
            url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
            files.append({"part": "image_url", **data_url(url, IMAGE_TYPES)})
        elif kind == "file" and role == "user" and isinstance(part.get("file"), dict):
            file = part["file"]
            if not isinstance(file.get("filename"), str):
                raise MediaError(f"content[{i}].file.filename: required with file_data")
            files.append(
                {"part": "file", "filename": file["filename"], **data_url(file.get("file_data"), ("application/pdf",))}
            )
        elif kind in ("image_url", "file"):
            raise MediaError(
                f"Image and file content parts are only allowed for messages with role 'user' (got {role!r})"
            )
        else:
            raise MediaError(f"Invalid content part at index {i}: expected text, image_url or file")
    return "\n".join(texts), files


def anthropic_blocks(content: Any) -> tuple[str, list[dict[str, Any]]] | None:
    """A Messages API content (a string, or blocks): its text and its files; None when it is not one."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return None
    texts, files = [], []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        source = block.get("source") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind in ("image", "document") and isinstance(source, dict) and source.get("type") == "base64":
            allowed = IMAGE_TYPES if kind == "image" else ("application/pdf",)
            files.append({"block": kind, **decoded(source.get("data"), source.get("media_type"), allowed)})
        else:
            return None
    return "".join(texts), files


def gemini_parts(parts: Any) -> tuple[str, list[dict[str, Any]]] | None:
    """Gemini parts: text and inline_data (snake or camel case); None when they are not valid parts."""
    if not isinstance(parts, list) or not parts:
        return None
    texts, files = [], []
    for part in parts:
        if not isinstance(part, dict):
            return None
        inline = part.get("inline_data", part.get("inlineData"))
        if "text" in part:
            texts.append(str(part["text"]))
        elif isinstance(inline, dict):
            mime = inline.get("mime_type", inline.get("mimeType"))
            files.append(
                {"part": "inline_data", **decoded(inline.get("data"), mime, (*IMAGE_TYPES, "application/pdf"))}
            )
        else:
            return None
    return "".join(texts), files
