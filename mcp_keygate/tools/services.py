"""What every MCP tool uses: the gateway, who is calling, metrics, progress, and one way failures
become tool errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from ..attempts import Notify
from ..auth import TokenRegistry
from ..errors import KeygateError
from ..gateway import Keygate
from ..keys.secret import scrub
from ..schemas import CompleteResult

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger("mcp_keygate.server")


class ToolServices:
    def __init__(self, gateway: Keygate, tokens: TokenRegistry | None, metrics: Metrics | None) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.registry = tokens or TokenRegistry({})
        self.metrics = metrics

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
        """Progress notifications for one call (skipped keys, fallbacks, waits)."""
        progress = 0

        async def notify(message: str) -> None:
            nonlocal progress
            progress += 1
            log.info("%s", message)
            await ctx.report_progress(progress, None, message)

        return notify

    async def answered(self, owner: str, what: str, call: Awaitable[CompleteResult]) -> CompleteResult:
        """Run a complete-like call; log and count it, and turn its failures into tool errors."""
        try:
            result = await call
        except KeygateError as exc:
            log.info("%s by %s failed: %s", what, owner, type(exc).__name__)
            if self.metrics is not None:
                self.metrics.on_call(owner, type(exc).__name__)
            raise ToolError(self.scrubbed(exc)) from None
        log.info("%s by %s answered by %s with key %s", what, owner, result.model, result.key_id)
        if self.metrics is not None:
            usage = result.usage
            self.metrics.on_call(owner, "ok")
            self.metrics.on_usage(owner, result.model, result.key_id, usage.input_tokens, usage.output_tokens)
        return result
