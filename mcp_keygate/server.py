"""MCP wiring: the tools agents call, over the SDK's `MCPServer`.

Tools are thin: they validate, hand the call to `Keygate`, and turn its exceptions into tool
errors (`isError`) whose text tells the agent what to do next.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from . import __version__
from .conversations import UnknownConversation
from .gateway import InvalidRequest, Keygate
from .keys.secret import scrub
from .router import RequestRejected, RouteFailed
from .schemas import CompleteResult, InputMessage, KeyStatusResult, ModelsResult

log = logging.getLogger("mcp_keygate.server")

INSTRUCTIONS = (
    "mcp-keygate calls LLM APIs for you with rotating keys and model fallback. Use `complete` to ask a "
    "model (pass the returned conversation_id to continue a conversation), `list_models` to see models "
    "and routes, and `key_status` to see which keys are cooling and why."
)


def build_server(gateway: Keygate, *, log_level: str = "INFO") -> MCPServer:
    """An MCPServer whose lifespan opens and closes `gateway`."""

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[None]:
        await gateway.open()
        try:
            yield None
        finally:
            await gateway.close()

    server = MCPServer(
        "mcp-keygate",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level=log_level.upper(),  # type: ignore[arg-type]
    )

    def tool_error(exc: Exception) -> ToolError:
        return ToolError(scrub(str(exc), gateway.secrets))

    @server.tool()
    async def complete(
        ctx: Context,
        prompt: Annotated[str | None, Field(description="a single user message; or use `messages`")] = None,
        messages: Annotated[
            list[InputMessage] | None, Field(description="several {role, content} messages; or use `prompt`")
        ] = None,
        model: Annotated[str, Field(description="a route or model name from list_models")] = "default",
        conversation_id: Annotated[
            str | None, Field(description="continue this conversation; omit to start a new one")
        ] = None,
        system: Annotated[str | None, Field(description="system prompt for this conversation")] = None,
        max_tokens: Annotated[int | None, Field(description="cap on the answer's tokens")] = None,
        temperature: Annotated[float | None, Field(ge=0, le=2)] = None,
        max_wait_s: Annotated[
            float, Field(ge=0, le=600, description="how long to wait for a cooling key before failing")
        ] = 20.0,
    ) -> CompleteResult:
        """Ask a model. Keys rotate and models fall back automatically; the whole conversation is kept."""
        progress = 0

        async def notify(message: str) -> None:
            nonlocal progress
            progress += 1
            log.info("%s", message)
            await ctx.report_progress(progress, None, message)

        try:
            return await gateway.complete(
                prompt=prompt,
                messages=messages,
                model=model,
                conversation_id=conversation_id,
                system=system,
                max_tokens=max_tokens,
                temperature=temperature,
                max_wait_s=max_wait_s,
                notify=notify,
            )
        except (InvalidRequest, UnknownConversation, RouteFailed, RequestRejected) as exc:
            raise tool_error(exc) from None

    @server.tool()
    async def list_models() -> ModelsResult:
        """Models and routes, with how many keys are ready and when the next one will be."""
        return gateway.list_models()

    @server.tool()
    async def key_status(
        provider: Annotated[str | None, Field(description="only this provider's keys")] = None,
    ) -> KeyStatusResult:
        """Every key's state (ready, cooling, exhausted, disabled), why, and for how long."""
        try:
            return gateway.key_status(provider)
        except InvalidRequest as exc:
            raise tool_error(exc) from None

    return server
