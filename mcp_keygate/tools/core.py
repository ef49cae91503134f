"""The built-in tools: complete, list_models, key_status, usage, list_conversations,
get_conversation, and (when enabled, for operators) reset_key."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from ..complete_request import DEFAULT_MAX_WAIT_S, CompleteRequest
from ..schemas import (
    CompleteResult,
    ConversationResult,
    ConversationsResult,
    InputMessage,
    KeyStatusResult,
    ModelsResult,
    ResetResult,
    UsageResult,
)
from .files import ClientRoots, gather
from .sampling import client_model
from .services import ToolServices

log = logging.getLogger("mcp_keygate.server")

# Honest hints for clients that decide approvals from them.
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
CALLS_A_MODEL = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)
RESETS = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)

FILES_HELP = (
    "files to send with the prompt: text (sent with its path as a header), PDFs and images. Over stdio a "
    "path inside the client's roots; over HTTP inline only: {data: base64, media_type, name}, MCP image "
    "content {type: image, data, mimeType} or an embedded resource "
    "{type: resource, resource: {uri, text|blob, mimeType}}"
)
Files = Annotated[list[str | dict[str, Any]] | None, Field(description=FILES_HELP)]
Images = Annotated[
    list[str | dict[str, Any]] | None,
    Field(description="images (PNG, JPEG, GIF, WebP) to send with the prompt; the same forms as `files`"),
]
MaxWait = Annotated[float, Field(ge=0, le=600, description="how long to wait for a cooling key before failing")]
ConversationId = Annotated[str | None, Field(description="continue this conversation; omit to start a new one")]


def register_core_tools(server: MCPServer, services: ToolServices) -> None:
    register_complete(server, services)
    register_views(server, services)
    if services.config.server.enable_reset_key:
        register_reset_key(server, services)


def register_complete(server: MCPServer, services: ToolServices) -> None:

    @server.tool(title="Ask a model", annotations=CALLS_A_MODEL)
    async def complete(
        ctx: Context,
        prompt: Annotated[str | None, Field(description="a single user message; or use `messages`")] = None,
        messages: Annotated[
            list[InputMessage] | None, Field(description="several {role, content} messages; or use `prompt`")
        ] = None,
        model: Annotated[str, Field(description="a route or model name from list_models")] = "default",
        conversation_id: ConversationId = None,
        system: Annotated[str | None, Field(description="system prompt for this conversation")] = None,
        max_tokens: Annotated[int | None, Field(description="cap on the answer's tokens")] = None,
        temperature: Annotated[
            float | None, Field(ge=0, le=2, description="sampling temperature, 0 to 2; omit for the model's default")
        ] = None,
        max_wait_s: MaxWait = DEFAULT_MAX_WAIT_S,
        response_schema: Annotated[
            dict[str, Any] | None,
            Field(description="a JSON Schema: the answer comes back as `json` too, validated against it"),
        ] = None,
        files: Files = None,
        images: Images = None,
        roots: ClientRoots = None,
    ) -> CompleteResult:
        """Ask a model. Keys rotate and models fall back automatically; the whole conversation is kept."""
        with services.tool_errors():
            attachments = gather(ctx, services.config, files, images, roots)
        request = CompleteRequest(
            prompt,
            messages,
            model,
            conversation_id,
            system,
            max_tokens,
            temperature,
            max_wait_s,
            response_schema=response_schema,
            attachments=attachments,
        )
        owner = services.caller()
        calls = services.gateway.calls
        call = calls.complete(
            request, caller=owner, notify=services.progress(ctx), last_resort=client_model(ctx, services)
        )
        return await services.answered(owner, "complete", call)


def register_views(server: MCPServer, services: ToolServices) -> None:

    @server.tool(title="List models and routes", annotations=READ_ONLY)
    async def list_models() -> ModelsResult:
        """Models and routes, with how many keys are ready and when the next one will be."""
        with services.tool_errors():
            return await services.gateway.views.list_models(services.caller())

    @server.tool(title="Key states", annotations=READ_ONLY)
    async def key_status(
        provider: Annotated[str | None, Field(description="only this provider's keys")] = None,
    ) -> KeyStatusResult:
        """Every key's state (ready, cooling, exhausted, disabled), why, and for how long."""
        with services.tool_errors():
            return await services.gateway.views.key_status(provider, services.caller())

    @server.tool(title="Token usage", annotations=READ_ONLY)
    async def usage(
        days: Annotated[int, Field(ge=1, le=400, description="today and the days before")] = 30,
    ) -> UsageResult:
        """Tokens used per caller, model and key (with tokens configured: your own usage only)."""
        with services.tool_errors():
            return await services.gateway.views.usage(services.caller() if services.multi_user else None, days)

    @server.tool(title="List conversations", annotations=READ_ONLY)
    async def list_conversations(
        limit: Annotated[int, Field(ge=1, le=500, description="newest first")] = 20,
    ) -> ConversationsResult:
        """Your conversations, newest first, with how many turns each holds."""
        with services.tool_errors():
            return await services.gateway.views.list_conversations(services.caller(), limit)

    @server.tool(title="Read a conversation", annotations=READ_ONLY)
    async def get_conversation(
        conversation_id: Annotated[str, Field(description="from complete or list_conversations")],
    ) -> ConversationResult:
        """A conversation's history, with the model, provider and key that wrote each answer."""
        with services.tool_errors():
            return await services.gateway.views.get_conversation(conversation_id, services.caller())


def register_reset_key(server: MCPServer, services: ToolServices) -> None:
    @server.tool(title="Reset a key (operators)", annotations=RESETS)
    async def reset_key(key_id: Annotated[str, Field(description="from key_status")]) -> ResetResult:
        """Operators: make a key ready again now (after a top-up, or a fixed key)."""
        owner = services.caller()
        if not services.is_operator():
            log.warning("reset_key %r refused: %s is not an operator", key_id, owner)
            raise ToolError(
                f"reset_key is for operators: token {owner!r} is not one ([server] operator_tokens, "
                "or by default tokens that no policy governs)"
            )
        log.warning("reset_key %r requested by %s", key_id, owner)
        with services.tool_errors():
            return await services.gateway.reset_key(key_id)
