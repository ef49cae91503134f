"""MCP wiring: the tools agents call, over the SDK's `MCPServer`.

Tools are thin: they validate, hand the call to `Keygate`, and turn its exceptions into tool
errors (`isError`) whose text tells the agent what to do next.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from . import __version__
from .auth import LOCAL_OWNER, TokenRegistry
from .conversations import UnknownConversation
from .gateway import CallTimedOut, InvalidRequest, Keygate
from .keys.secret import scrub
from .router import RequestRejected, RouteFailed
from .schemas import (
    CompleteResult,
    ConversationResult,
    ConversationsResult,
    InputMessage,
    KeyStatusResult,
    ModelsResult,
    ResetResult,
)

log = logging.getLogger("mcp_keygate.server")

INSTRUCTIONS = (
    "mcp-keygate calls LLM APIs for you with rotating keys and model fallback. Use `complete` to ask a "
    "model (pass the returned conversation_id to continue a conversation), `list_models` to see models "
    "and routes, `key_status` to see which keys are cooling and why, and `list_conversations` / "
    "`get_conversation` to look back."
)


def build_server(
    gateway: Keygate,
    *,
    log_level: str = "INFO",
    tokens: TokenRegistry | None = None,
    owns_gateway: bool = True,
    metrics: Any = None,
) -> MCPServer:
    """An MCPServer for `gateway`. Over stdio its lifespan opens and closes the gateway; over HTTP
    the app's lifespan does (`owns_gateway=False`), since the SDK enters this one per SSE session."""

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[None]:
        if not owns_gateway:
            yield None
            return
        await gateway.open()
        try:
            yield None
        finally:
            await gateway.close()

    def caller(ctx: Context) -> str:
        """The token name behind this request (already verified by the HTTP middleware), else local."""
        if tokens is None or not tokens.enabled:
            return LOCAL_OWNER
        return tokens.name_for_header((ctx.headers or {}).get("authorization")) or LOCAL_OWNER

    known_arguments: dict[str, set[str]] = {}

    async def reject_unknown_arguments(ctx: Any, call_next: Any) -> Any:
        """A misspelt argument (`promt`) would otherwise be dropped silently and the call run without it."""
        if ctx.method == "tools/call" and isinstance(ctx.params, Mapping):
            if not known_arguments:
                for tool in await server.list_tools():
                    known_arguments[tool.name] = set((tool.input_schema or {}).get("properties", {}))
            name = ctx.params.get("name")
            given = ctx.params.get("arguments") or {}
            allowed = known_arguments.get(name)
            unknown = sorted(set(given) - allowed) if allowed is not None and isinstance(given, Mapping) else []
            if unknown:
                message = (
                    f"unknown argument(s) {', '.join(repr(u) for u in unknown)} for {name}; "
                    f"expected some of: {', '.join(sorted(allowed))}"
                )
                return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
        return await call_next(ctx)

    server = MCPServer(
        "mcp-keygate",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level=log_level.upper(),  # type: ignore[arg-type]
        middleware=[reject_unknown_arguments],
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
        owner = caller(ctx)

        async def notify(message: str) -> None:
            nonlocal progress
            progress += 1
            log.info("%s", message)
            await ctx.report_progress(progress, None, message)

        try:
            result = await gateway.complete(
                prompt=prompt,
                messages=messages,
                model=model,
                conversation_id=conversation_id,
                system=system,
                max_tokens=max_tokens,
                temperature=temperature,
                max_wait_s=max_wait_s,
                notify=notify,
                owner=owner,
            )
        except (InvalidRequest, UnknownConversation, RouteFailed, RequestRejected, CallTimedOut) as exc:
            log.info("complete by %s failed: %s", owner, type(exc).__name__)
            if metrics is not None:
                metrics.on_call(owner, type(exc).__name__)
            raise tool_error(exc) from None
        log.info("complete by %s answered by %s with key %s", owner, result.model, result.key_id)
        if metrics is not None:
            metrics.on_call(owner, "ok")
        return result

    @server.tool()
    async def list_models() -> ModelsResult:
        """Models and routes, with how many keys are ready and when the next one will be."""
        return await gateway.list_models()

    @server.tool()
    async def key_status(
        provider: Annotated[str | None, Field(description="only this provider's keys")] = None,
    ) -> KeyStatusResult:
        """Every key's state (ready, cooling, exhausted, disabled), why, and for how long."""
        try:
            return await gateway.key_status(provider)
        except InvalidRequest as exc:
            raise tool_error(exc) from None

    @server.tool()
    async def list_conversations(
        ctx: Context, limit: Annotated[int, Field(ge=1, le=500, description="newest first")] = 20
    ) -> ConversationsResult:
        """Your conversations, newest first, with how many turns each holds."""
        return await gateway.list_conversations(caller(ctx), limit)

    @server.tool()
    async def get_conversation(ctx: Context, conversation_id: str) -> ConversationResult:
        """A conversation's history, with the model, provider and key that wrote each answer."""
        try:
            return await gateway.get_conversation(conversation_id, caller(ctx))
        except (InvalidRequest, UnknownConversation) as exc:
            raise tool_error(exc) from None

    if gateway.config.server.enable_reset_key:

        @server.tool()
        async def reset_key(ctx: Context, key_id: Annotated[str, Field(description="from key_status")]) -> ResetResult:
            """Operators: make a key ready again now (after a top-up, or a fixed key)."""
            log.warning("reset_key %s requested by %s", key_id, caller(ctx))
            try:
                return await gateway.reset_key(key_id)
            except InvalidRequest as exc:
                raise tool_error(exc) from None

    @server.resource("keygate://keys", name="keys", mime_type="application/json")
    async def keys_resource() -> str:
        """Every key's state, why, and for how long (the key_status table)."""
        return (await gateway.key_status()).model_dump_json(indent=2)

    @server.resource("keygate://models", name="models", mime_type="application/json")
    async def models_resource() -> str:
        """Models and routes, with how many keys are ready."""
        return (await gateway.list_models()).model_dump_json(indent=2)

    @server.resource("keygate://conversations", name="conversations", mime_type="application/json")
    async def conversations_resource() -> str:
        """This server's local conversations (over HTTP with tokens, use the list_conversations tool)."""
        if tokens is not None and tokens.enabled:
            return '{"note": "conversations belong to each token: use the list_conversations tool"}'
        return (await gateway.list_conversations(LOCAL_OWNER, 50)).model_dump_json(indent=2)

    @server.resource("keygate://conversations/{conversation_id}", name="conversation", mime_type="application/json")
    async def conversation_resource(conversation_id: str, ctx: Context) -> str:
        """One conversation, with which model answered each turn."""
        try:
            return (await gateway.get_conversation(conversation_id, caller(ctx))).model_dump_json(indent=2)
        except (InvalidRequest, UnknownConversation) as exc:
            raise ResourceError(scrub(str(exc), gateway.secrets)) from None

    return server
