"""Files and images a call brings along: read (local paths, confined to roots) or decoded (inline
content), checked, and named by content hash.

Over stdio a caller may name local paths; they must lie inside the client's roots (or the config's
`[server] file_roots`), resolved with every symlink followed, so neither `..` nor a symlink can lead
out of them. Over HTTP only inline content is taken — base64 with a media type, or MCP image content
and embedded resources: a remote caller never makes the server read its own disk.

What a file is, is decided by its bytes, not its name: PNG, JPEG, GIF and WebP are images, `%PDF-`
is a PDF, valid UTF-8 is text; anything else is refused. Declared media types must match the bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import LimitsConfig
from .errors import InvalidRequest

Kind = Literal["text", "image", "pdf"]
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_INLINE_HINT = 'send it inline as {"data": "<base64>", "media_type": "image/png", "name": "chart.png"}'


@dataclass(frozen=True, slots=True)
class Attachment:
    """One file of a user turn. Stored once by `sha256`; `data` is None when only the reference is loaded."""

    name: str
    media_type: str
    sha256: str
    size: int
    data: bytes | None = None

    @property
    def kind(self) -> Kind:
        if self.media_type in IMAGE_TYPES:
            return "image"
        return "pdf" if self.media_type == "application/pdf" else "text"

    def text(self) -> str:
        return (self.data or b"").decode("utf-8", errors="replace")

    def reference(self) -> Attachment:
        return Attachment(self.name, self.media_type, self.sha256, self.size)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "media_type": self.media_type, "sha256": self.sha256, "size": self.size}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Attachment:
        return Attachment(str(data["name"]), str(data["media_type"]), str(data["sha256"]), int(data["size"]))


def sniff(data: bytes) -> str | None:
    """The media type the bytes are (None: not a kind we send)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text/plain"


def made(name: str, data: bytes, media_type: str) -> Attachment:
    return Attachment(name, media_type, hashlib.sha256(data).hexdigest(), len(data), data)


class Gatherer:
    """Turns a call's `files` and `images` into attachments, within the limits, or one clear refusal."""

    def __init__(self, limits: LimitsConfig, roots: Sequence[Path] | None, remote: bool) -> None:
        self.limits = limits
        self.roots = [Path(os.path.realpath(r)) for r in roots or []]
        self.remote = remote
        self.total = 0

    def gather(self, files: Sequence[Any] | None, images: Sequence[Any] | None) -> tuple[Attachment, ...]:
        entries = [("files", i, e) for i, e in enumerate(files or [])]
        entries += [("images", i, e) for i, e in enumerate(images or [])]
        if len(entries) > self.limits.max_attachments:
            raise InvalidRequest(
                f"files/images: {len(entries)} attachments, the limit is {self.limits.max_attachments} "
                "([limits] max_attachments)"
            )
        found = []
        for field, i, entry in entries:
            where = f"{field}[{i}]"
            attachment = self._path(where, entry) if isinstance(entry, str) else self._inline(where, entry)
            if field == "images" and attachment.kind != "image":
                raise InvalidRequest(
                    f"{where}: {attachment.name!r} is {attachment.media_type}, not an image "
                    "(PNG, JPEG, GIF or WebP); put other files in `files`"
                )
            self.total += attachment.size
            if self.total > self.limits.max_attachment_bytes:
                raise InvalidRequest(
                    f"{where}: the attachments come to more than {self.limits.max_attachment_bytes} bytes "
                    "([limits] max_attachment_bytes); send fewer or smaller files"
                )
            found.append(attachment)
        return tuple(found)

    def _path(self, where: str, given: str) -> Attachment:
        if self.remote:
            raise InvalidRequest(
                f"{where}: a path cannot be sent over HTTP — this server never reads its own disk for a remote "
                f"caller; {_INLINE_HINT}"
            )
        if not self.roots:
            raise InvalidRequest(
                f"{where}: no roots to read files from — the client declared no MCP roots and [server] file_roots "
                "is empty; add the folder to the client's roots or to file_roots"
            )
        if not given.strip() or "\x00" in given:
            raise InvalidRequest(f"{where}: expected a file path")
        candidate = Path(given).expanduser()
        if not candidate.is_absolute():
            candidate = self.roots[0] / candidate
        real = Path(os.path.realpath(candidate))  # every symlink and `..` resolved
        if not any(real == root or root in real.parents for root in self.roots):
            shown = ", ".join(str(r) for r in self.roots)
            raise InvalidRequest(
                f"{where}: {given!r} is outside the allowed roots ({shown}) once symlinks and '..' are resolved; "
                "only files inside the client's roots (or [server] file_roots) can be read"
            )
        data = self._read(where, given, real)
        media_type = sniff(data)
        if media_type is None:
            raise InvalidRequest(f"{where}: {given!r} is not text, an image (PNG, JPEG, GIF, WebP) or a PDF")
        return made(given, data, media_type)

    def _read(self, where: str, given: str, real: Path) -> bytes:
        limit = self.limits.max_file_bytes
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise InvalidRequest(f"{where}: {given!r} does not exist") from None
        except OSError as exc:
            raise InvalidRequest(f"{where}: {given!r} cannot be read ({exc.strerror})") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise InvalidRequest(f"{where}: {given!r} is not a regular file")
        with os.fdopen(fd, "rb") as handle:
            if info.st_size > limit:
                raise InvalidRequest(
                    f"{where}: {given!r} is {info.st_size} bytes, the limit is {limit} ([limits] max_file_bytes)"
                )
            data = handle.read(limit + 1)
        if len(data) > limit:  # it grew while we read it
            raise InvalidRequest(f"{where}: {given!r} is over {limit} bytes ([limits] max_file_bytes)")
        return data

    def _inline(self, where: str, entry: Any) -> Attachment:
        if not isinstance(entry, Mapping):
            raise InvalidRequest(f"{where}: expected a path (stdio only) or inline content; {_INLINE_HINT}")
        if entry.get("type") == "resource" and isinstance(entry.get("resource"), Mapping):
            resource = entry["resource"]  # an MCP embedded resource: {uri, mimeType, text | blob}
            name = str(resource.get("uri") or "resource")
            declared = resource.get("mimeType")
            if isinstance(resource.get("text"), str):
                return self._text(where, name, resource["text"])
            return self._decoded(where, name, resource.get("blob"), declared)
        name = str(entry.get("name") or entry.get("uri") or f"{where}")
        declared = entry.get("media_type", entry.get("mimeType"))
        if isinstance(entry.get("text"), str) and "data" not in entry:
            return self._text(where, name, entry["text"])
        return self._decoded(where, name, entry.get("data"), declared)

    def _text(self, where: str, name: str, text: str) -> Attachment:
        data = text.encode("utf-8")
        if len(data) > self.limits.max_file_bytes:
            raise InvalidRequest(
                f"{where}: {len(data)} bytes, the limit is {self.limits.max_file_bytes} ([limits] max_file_bytes)"
            )
        return made(name, data, "text/plain")

    def _decoded(self, where: str, name: str, encoded: Any, declared: Any) -> Attachment:
        if not isinstance(encoded, str) or not encoded:
            raise InvalidRequest(f"{where}: no content; {_INLINE_HINT}")
        if not isinstance(declared, str) or not declared:
            raise InvalidRequest(f"{where}: media_type is required with data (e.g. image/png, application/pdf)")
        limit = self.limits.max_file_bytes
        if len(encoded) > (limit + 2) // 3 * 4 + 4:
            raise InvalidRequest(f"{where}: over {limit} bytes once decoded ([limits] max_file_bytes)")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"{where}: data is not valid base64 (standard alphabet, with padding)") from None
        if len(data) > limit:
            raise InvalidRequest(f"{where}: {len(data)} bytes, the limit is {limit} ([limits] max_file_bytes)")
        actual = sniff(data)
        declared = declared.split(";")[0].strip().lower()
        if actual is None or (actual != declared and not (actual == "text/plain" and declared.startswith("text/"))):
            raise InvalidRequest(
                f"{where}: the data is not {declared} (it looks like {actual or 'unsupported binary data'}); "
                "send text, PNG, JPEG, GIF, WebP or PDF with its real media type"
            )
        return made(name, data, actual)
