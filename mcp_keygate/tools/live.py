"""The MCP side of a config reload: preset tools and prompts follow the new config, and every
connected client is told that its tool and prompt lists changed.

Clients on the session wires (2024-11-05 … 2025-11-25) get `notifications/tools/list_changed`
and `notifications/prompts/list_changed` on their connection; clients on 2026-07-28 that listen
(`subscriptions/listen`) get the same events through the server's subscription bus.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from typing import Any

import anyio
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import MCPServer
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, PromptsListChanged, ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..config import PresetConfig
from ..reload_report import ReloadReport
from .client_logging import connection_of
from .filters import UnknownArguments
from .lean_schemas import lean_output_schemas
from .presets import register_preset
from .services import ToolServices

log = logging.getLogger("mcp_keygate.server")
NOTIFY_TIMEOUT_S = 2.0


class LiveTools:
    """Keeps the server's preset tools and prompts in step with the gateway's config, and tells
    clients. Also server middleware: it remembers the last session of each session-wire
    connection (bounded), since the SDK keeps no list of them."""

    def __init__(
        self,
        server: MCPServer,
        services: ToolServices,
        bus: InMemorySubscriptionBus,
        unknown_arguments: UnknownArguments,
        capacity: int = 4096,
    ) -> None:
        self.server = server
        self.services = services
        self.bus = bus
        self.unknown_arguments = unknown_arguments
        self.capacity = capacity
        self.presets: dict[str, PresetConfig] = dict(services.config.presets)
        self._sessions: OrderedDict[str, ServerSession] = OrderedDict()
        advertise_list_changes(server)

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        connection = connection_of(ctx.request)
        # A request that names no session (the one opening a streamable-HTTP session) would file
        # the same connection under a second name, and it would be told everything twice.
        named = connection not in ("http:sessionless", "sse:unknown")
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS and ctx.session is not None and named:
            self._sessions[connection] = ctx.session
            self._sessions.move_to_end(connection)
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)
        return await call_next(ctx)

    async def apply(self, report: ReloadReport) -> int:
        """Follow a reload that already happened in the gateway; the number of session-wire clients
        told (listeners on 2026-07-28 are told through the bus)."""
        self._sync_presets(self.services.config.presets)
        if not (report.tools_changed or report.prompts_changed):
            return 0
        if report.tools_changed:
            await self.bus.publish(ToolsListChanged())
        if report.prompts_changed:
            await self.bus.publish(PromptsListChanged())
        return await self._tell_sessions(report.tools_changed, report.prompts_changed)

    def _sync_presets(self, presets: dict[str, PresetConfig]) -> None:
        for name, old in self.presets.items():
            if presets.get(name) != old:
                self.server.remove_tool(name)
                self.server.remove_prompt(name)
        for name, preset in presets.items():
            if self.presets.get(name) != preset:
                register_preset(self.server, self.services, name, preset)
        lean_output_schemas(self.server)
        self.presets = dict(presets)
        self.unknown_arguments.schemas.clear()  # re-read from the server at the next call

    async def _tell_sessions(self, tools: bool, prompts: bool) -> int:
        told = 0
        for connection, session in list(self._sessions.items()):
            try:
                with anyio.fail_after(NOTIFY_TIMEOUT_S):
                    if tools:
                        await session.send_tool_list_changed()
                    if prompts:
                        await session.send_prompt_list_changed()
                told += 1
            except Exception:  # the connection is gone (or stuck): forget it, tell the others
                self._sessions.pop(connection, None)
        return told


def advertise_list_changes(server: MCPServer) -> None:
    """Say `listChanged: true` for tools and prompts in the 2025-era handshake. The SDK derives the
    flags from NotificationOptions passed to `create_initialization_options`, which MCPServer calls
    without any; on 2026-07-28 it derives them from `subscriptions/listen`, which MCPServer serves."""
    lowlevel = server._lowlevel_server
    options = NotificationOptions(tools_changed=True, prompts_changed=True)
    original = type(lowlevel).create_initialization_options
    lowlevel.create_initialization_options = functools.partial(original, lowlevel, options)  # type: ignore[method-assign]
