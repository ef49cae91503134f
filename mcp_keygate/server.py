"""MCP wiring: the tools, prompts and resources agents use, over the SDK's `MCPServer`.

Tools are thin: they build a request, hand it to the gateway's call service or views, and turn
its errors into tool errors (`isError`) whose text tells the agent what to do next. The pieces
live in `tools/`; this function puts them together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp_types import SetLevelRequestParams

from . import __version__
from .auth import TokenRegistry
from .gateway import Keygate
from .tools.client_logging import explain_bad_level
from .tools.core import register_core_tools
from .tools.filters import HiddenForCaller, PromptArguments, UnknownArguments
from .tools.lean_schemas import lean_output_schemas
from .tools.live import LiveTools
from .tools.presets import register_presets
from .tools.resources import register_resources
from .tools.services import ToolServices

if TYPE_CHECKING:
    from .metrics import Metrics
    from .reload import Reloader

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
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
    metrics: Metrics | None = None,
    reloader: Reloader | None = None,
) -> MCPServer:
    """An MCPServer for `gateway`. Over stdio its lifespan opens and closes the gateway (and runs
    the reloader); over HTTP the app's lifespan does (`owns_gateway=False`), since the SDK enters
    this one per SSE session. A reload changes the preset tools and prompts and tells clients."""
    services = ToolServices(gateway, tokens, metrics)
    if services.multi_user:  # the /status page shows a token its own spend; operators see everyone's
        gateway.activity.sees_all = lambda name: gateway.policies.is_operator(name)
    unknown_arguments = UnknownArguments()
    middleware: list[Any] = [unknown_arguments, explain_bad_level]
    if services.multi_user:
        hidden = HiddenForCaller(services)
        unknown_arguments.hidden = hidden.hidden
        middleware.append(hidden)
    middleware.append(PromptArguments(services))
    bus = InMemorySubscriptionBus()
    server = MCPServer(
        "mcp-keygate",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=_gateway_lifespan(gateway, reloader) if owns_gateway else None,
        log_level=cast(LogLevel, log_level.upper()),
        middleware=middleware,
        subscriptions=bus,
    )
    unknown_arguments.server = server
    live = LiveTools(server, services, bus, unknown_arguments)
    server.middleware.append(live)
    if reloader is not None:
        reloader.listeners.append(live.apply)
    register_core_tools(server, services)
    register_presets(server, services)
    register_resources(server, services)
    lean_output_schemas(server)
    # The SDK's documented way to serve a method the 2026 wire dropped for the clients that still
    # speak 2025-11-25 (see mcp.server.extension.MethodBinding): its lowlevel server.
    server._lowlevel_server.add_request_handler(
        "logging/setLevel", SetLevelRequestParams, services.log_levels.handle_set_level
    )
    return server


def _gateway_lifespan(gateway: Keygate, reloader: Reloader | None) -> Any:
    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[None]:
        await gateway.open()
        try:
            async with anyio.create_task_group() as group:
                if reloader is not None:
                    group.start_soon(reloader.run)
                yield None
                group.cancel_scope.cancel()
        finally:
            await gateway.close()

    return lifespan
