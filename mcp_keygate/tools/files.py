"""A tool call's `files` and `images`, gathered where the call came from: over stdio, local paths
inside the client's MCP roots or, when it declares none, `[server] file_roots`; over HTTP, inline
content only (`attachments.Gatherer` decides what is allowed).

The roots are asked of the client with the SDK's `ListRoots` resolver, which speaks both protocol
eras: a `roots/list` request mid-call on 2025-11-25, an input-required round on 2026-07-28. It asks
only when the call names a path over stdio and the client declares roots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import ListRoots, Resolve
from mcp_types import ListRootsResult

from ..attachments import Attachment, Gatherer
from ..config import Config


def is_remote(ctx: Context) -> bool:
    """Whether the call came over HTTP (stdio has no HTTP request behind it)."""
    return ctx.request_context.request is not None


async def ask_roots(ctx: Context, files: list[Any] | None = None, images: list[Any] | None = None) -> ListRoots | None:
    """Ask the client for its roots only when they decide something: a path, over stdio, from a client
    that declares roots. (Async though it awaits nothing: the SDK runs a plain function resolver in a
    worker thread, ≈100 µs on every call.)"""
    if is_remote(ctx) or not any(isinstance(e, str) for e in [*(files or []), *(images or [])]):
        return None
    capabilities = ctx.client_capabilities
    return ListRoots() if capabilities is not None and capabilities.roots is not None else None


async def ask_roots_for_files(ctx: Context, files: list[Any] | None = None) -> ListRoots | None:
    return await ask_roots(ctx, files, None)


async def ask_roots_for_images(ctx: Context, images: list[Any] | None = None) -> ListRoots | None:
    return await ask_roots(ctx, None, images)


# The SDK wraps every resolver's answer in `AcceptedElicitation[Any]`. pydantic keeps parametrised
# classes only weakly, so between garbage collections that class was rebuilt (≈0.3 ms) on every
# call; holding it here keeps the one class alive.
_ACCEPTED_ANY = AcceptedElicitation[Any]

ClientRoots = Annotated[ListRootsResult | None, Resolve(ask_roots)]
# A preset tool takes `files`, `images` or both: its resolver names only the arguments it has.
PRESET_ROOTS: dict[tuple[bool, bool], Any] = {
    (True, True): ClientRoots,
    (True, False): Annotated[ListRootsResult | None, Resolve(ask_roots_for_files)],
    (False, True): Annotated[ListRootsResult | None, Resolve(ask_roots_for_images)],
}


def gather(
    ctx: Context, config: Config, files: list[Any] | None, images: list[Any] | None, listed: ListRootsResult | None
) -> tuple[Attachment, ...]:
    """The call's attachments, read and checked (InvalidRequest naming the entry when one is refused)."""
    if not files and not images:
        return ()
    roots = [p for p in (_path(str(r.uri)) for r in (listed.roots if listed else [])) if p is not None]
    if not roots:
        roots = [Path(p).expanduser() for p in config.server.file_roots]
    return Gatherer(config.limits, roots, is_remote(ctx)).gather(files, images)


def _path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(unquote(parsed.path)))
