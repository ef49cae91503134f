"""Presets over REST take the same JSON Schema as their MCP tools (read from the MCP server, so the
two can never disagree) and are checked by the same rules: unknown arguments, missing ones and
wrong types are refused with the argument named."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..tools.filters import refusal

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

_NOT_PRESETS = {"complete", "list_models", "key_status", "usage", "list_conversations", "get_conversation", "reset_key"}


class PresetSchemas:
    def __init__(self, server: MCPServer) -> None:
        self.server = server

    async def schema(self, name: str) -> dict[str, Any] | None:
        """The preset tool's input schema now (a reload may have changed it); None if no such preset."""
        if name in _NOT_PRESETS:
            return None
        for tool in await self.server.list_tools():
            if tool.name == name:
                return dict(tool.input_schema or {})
        return None

    async def problem(self, name: str, arguments: dict[str, Any]) -> str:
        """Why these arguments cannot run the preset, or '' when they can."""
        schema = await self.schema(name)
        if schema is None:
            return f"unknown preset {name[:100]!r}: GET /v1/presets lists the ones you can use"
        found = refusal(name, schema, arguments)
        if found:
            return found
        missing = [p for p in schema.get("required", []) if p not in arguments]
        return f"{name}: missing required argument(s) {', '.join(map(repr, missing))}" if missing else ""
