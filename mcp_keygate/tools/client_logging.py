"""MCP logging for clients: `logging/setLevel` and the `notifications/message` a call sends.

On the session wires (2024-11-05 to 2025-11-25) a client picks, per connection, the least severe
level it wants to hear; until it does, it hears warnings and worse (a key set aside, a fallback).
On 2026-07-28 there is no `logging/setLevel`: the client opts in per request (`_meta` log level)
and the SDK filters. Either way a call's notices go only to the connection that made the call,
never to another client.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, EmptyResult, SetLevelRequestParams

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
DEFAULT_LEVEL = "warning"
STDIO = "stdio"
MESSAGES_PATH = "/messages"  # the SSE transport's POST route (http_server.MESSAGES_PATH)

# `logging/setLevel` and sampling are deprecated at 2026-07-28 but current on the wires desktop clients speak;
# the SDK warns at every use of its log helpers, which would only add noise to stderr.
warnings.filterwarnings("ignore", message=r".*(logging|sampling) capability is deprecated.*")


def connection_of(request: Any) -> str:
    """Which client connection a request came on: its SSE session (the `session_id` the SSE
    transport routes by), its streamable-HTTP session (the header that transport routes by), or
    stdio's single pipe. Each transport's own identifier only, so a header cannot name another
    transport's session; session ids are bound to their token by the SDK."""
    if request is None:
        return STDIO
    url = getattr(request, "url", None)
    if url is not None and url.path.startswith(MESSAGES_PATH):
        query = getattr(request, "query_params", None)
        sse_session = query.get("session_id") if query is not None else None
        return f"sse:{sse_session}" if sse_session else "sse:unknown"
    headers = getattr(request, "headers", None)
    session = headers.get("mcp-session-id") if headers is not None else None
    return f"http:{session}" if session else "http:sessionless"


class ClientLogLevels:
    """The level each connection chose, bounded (the oldest connections are forgotten first)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._levels: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def set(self, connection: str, level: str) -> None:
        self._levels[connection] = LEVELS.index(level)
        self._levels.move_to_end(connection)
        while len(self._levels) > self._capacity:
            self._levels.popitem(last=False)

    def wants(self, connection: str, level: str) -> bool:
        chosen = self._levels.get(connection, LEVELS.index(DEFAULT_LEVEL))
        return LEVELS.index(level) >= chosen

    async def handle_set_level(self, ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
        """The `logging/setLevel` request handler."""
        self.set(connection_of(ctx.request), params.level)
        return EmptyResult()


async def explain_bad_level(ctx: Any, call_next: Any) -> Any:
    """Server middleware: a `logging/setLevel` with a wrong level gets a message that names the field
    and the choices (the SDK's own check, which runs later, says only "Invalid request parameters")."""
    if ctx.method == "logging/setLevel" and isinstance(ctx.params, Mapping):
        level = ctx.params.get("level")
        if level not in LEVELS:
            shown = repr(level)[:40]
            raise MCPError(
                INVALID_PARAMS,
                f"level: expected one of {', '.join(LEVELS)}; got {shown}",
                {"argument": "level", "expected": list(LEVELS)},
            )
    return await call_next(ctx)
