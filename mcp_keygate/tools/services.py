"""What every MCP tool uses: the gateway, who is calling, metrics, progress, and one way failures
become tool errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..accounting import accounted
from ..attempts import NoticeLevel, Notify
from ..auth import TokenRegistry
from ..config import Config
from ..errors import KeygateError
from ..gateway import Keygate
from ..keys.secret import scrub
from ..schemas import CompleteResult
from .client_logging import ClientLogLevels, connection_of

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger("mcp_keygate.server")


class ToolServices:
    def __init__(self, gateway: Keygate, tokens: TokenRegistry | None, metrics: Metrics | None) -> None:
        self.gateway = gateway
        self.registry = tokens or TokenRegistry({})
        self.metrics = metrics
        self.log_levels = ClientLogLevels()

    @property
    def config(self) -> Config:
        """The gateway's config now (a reload replaces it)."""
        return self.gateway.config

    @property
    def multi_user(self) -> bool:
        """Callers are told apart by their tokens (HTTP with tokens); else everyone is `local`."""
        return self.registry.enabled

    def caller(self) -> str:
        """Who is calling: what the HTTP auth guard established (over stdio, or without tokens: local)."""
        return self.registry.caller()

    def is_operator(self) -> bool:
        return not self.multi_user or self.gateway.policies.is_operator(self.caller())

    def scrubbed(self, exc: BaseException) -> str:
        return scrub(str(exc), self.gateway.secrets)

    @contextmanager
    def tool_errors(self) -> Iterator[None]:
        """Every KeygateError (a refused call, a store that failed) becomes a tool error whose text
        tells the agent what to do — never a key, never a traceback."""
        try:
            yield
        except KeygateError as exc:
            raise ToolError(self.scrubbed(exc)) from None

    def progress(self, ctx: Context) -> Notify:
        """What one call tells its client: a progress notification for every step (keys set aside,
        fallbacks, waits, heartbeats), and a log message when the client wants that level."""
        progress = 0
        request = ctx.request_context
        modern = request.protocol_version in MODERN_PROTOCOL_VERSIONS
        connection = connection_of(request.request)

        async def notify(message: str, level: NoticeLevel = "info") -> None:
            nonlocal progress
            progress += 1
            log.info("%s", message)
            message = scrub(message, self.gateway.secrets)
            await ctx.report_progress(progress, None, message)
            # On 2026-07-28 the SDK sends only what this request opted in to; before, we filter.
            if modern or self.log_levels.wants(connection, level):
                await ctx.log(level, message, logger_name="mcp_keygate")

        return notify

    async def answered(self, owner: str, what: str, call: Awaitable[CompleteResult]) -> CompleteResult:
        """Run a complete-like call; log and count it, and turn its failures into tool errors."""
        try:
            return await accounted(self.metrics, owner, what, call, self.gateway.activity)
        except KeygateError as exc:
            raise ToolError(self.scrubbed(exc)) from None
