"""Filters on MCP requests, run by the SDK around every handler.

- `UnknownArguments`: a misspelt argument (`promt`) is refused with the tool's argument list,
  rather than dropped silently and the call run without it; a wrong type or a value out of range
  is refused in one line naming the field (`tools/arguments.py`).
- `HiddenForCaller`: `tools/list` and `prompts/list` show a token only what it may use (presets its
  policy allows; reset_key to operators), and `prompts/get` of a hidden prompt is an unknown prompt
  (its system prompt and template are the operator's, not the token's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent

from ..policies import PolicyRefused
from .arguments import argument_problems
from .services import ToolServices

log = logging.getLogger("mcp_keygate.server")


class UnknownArguments:
    def __init__(self) -> None:
        self.server: MCPServer | None = None  # set once the server exists (it is built with this filter)
        self.schemas: dict[str, dict[str, Any]] = {}
        # Tools the caller may not use: their arguments are not checked, so a refusal cannot tell
        # a hidden tool's parameters (the tool itself refuses, naming the policy).
        self.hidden: Callable[[], set[str]] = set

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method == "tools/call" and isinstance(ctx.params, Mapping):
            if not self.schemas and self.server is not None:
                self.schemas = {tool.name: dict(tool.input_schema or {}) for tool in await self.server.list_tools()}
            name = ctx.params.get("name")
            given = ctx.params.get("arguments") or {}
            schema = self.schemas.get(name) if isinstance(name, str) and name not in self.hidden() else None
            if schema is not None and isinstance(given, Mapping):
                message = refusal(str(name), schema, given)
                if message:
                    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
        return await call_next(ctx)


def refusal(name: str, schema: dict[str, Any], given: Mapping[str, Any]) -> str:
    """Why these arguments cannot be right for the tool, or '' when they may be."""
    allowed = set(schema.get("properties", {}))
    unknown = sorted(set(given) - allowed)
    if unknown:
        return (
            f"unknown argument(s) {', '.join(repr(u) for u in unknown)} for {name}; "
            f"expected some of: {', '.join(sorted(allowed))}"
        )
    return "; ".join(argument_problems(schema, given))


class HiddenForCaller:
    def __init__(self, services: ToolServices) -> None:
        self.services = services

    def hidden(self) -> set[str]:
        """Preset tools and prompts the caller's policy does not allow, and reset_key for non-operators."""
        services = self.services
        names = set() if services.is_operator() else {"reset_key"}
        policy = services.gateway.policies.for_token(services.caller())
        if policy is not None:
            names |= {name for name in services.config.presets if not policy.may_use_preset(services.config, name)}
        return names

    def refusal(self, name: str) -> str:
        """Why the caller may not call the tool `name` (it is hidden from it)."""
        services = self.services
        owner = services.caller()
        if name == "reset_key":
            return (
                f"reset_key is for operators: token {owner!r} is not one ([server] operator_tokens, "
                "or by default tokens that no policy governs)"
            )
        policy = services.gateway.policies.for_token(owner)
        preset = services.config.presets.get(name)
        if policy is not None and preset is not None:
            try:
                policy.check(services.config, owner, preset.route, name)
            except PolicyRefused as exc:
                return str(exc)
        return f"Unknown tool: {name}"

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method == "prompts/get" and isinstance(ctx.params, Mapping) and ctx.params.get("name") in self.hidden():
            raise MCPError(INVALID_PARAMS, f"Unknown prompt: {ctx.params.get('name')}")
        if ctx.method == "tools/call" and isinstance(ctx.params, Mapping):
            name = ctx.params.get("name")
            if isinstance(name, str) and name in self.hidden():
                # Before the SDK checks the arguments: its message would tell the hidden tool's parameters.
                given = ctx.params.get("arguments")
                target = given.get("key_id") if isinstance(given, Mapping) else None
                log.warning("%s %r refused: hidden from %s", name, target, self.services.caller())
                return CallToolResult(content=[TextContent(type="text", text=self.refusal(name))], is_error=True)
        result = await call_next(ctx)
        if ctx.method not in ("tools/list", "prompts/list"):
            return result
        hidden = self.hidden()
        field = "tools" if ctx.method == "tools/list" else "prompts"
        if not hidden:
            return result
        if isinstance(result, dict):
            return {**result, field: [item for item in result.get(field) or [] if _name(item) not in hidden]}
        items = getattr(result, field, None)
        if items is None:
            return result
        return result.model_copy(update={field: [item for item in items if _name(item) not in hidden]})


class PromptArguments:
    """`prompts/get` errors are invalid-params (-32602) naming the prompt or the argument and why —
    not an internal error with a traceback in the log."""

    def __init__(self, services: ToolServices) -> None:
        self.services = services

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method != "prompts/get" or not isinstance(ctx.params, Mapping):
            return await call_next(ctx)
        name = ctx.params.get("name")
        arguments = ctx.params.get("arguments") or {}
        preset = self.services.config.presets.get(name) if isinstance(name, str) else None
        if preset is None:
            shown = str(name)[:100]
            raise MCPError(INVALID_PARAMS, f"Unknown prompt: {shown!r} (prompts/list shows the ones you can use)")
        for parameter, spec in preset.parameters.items():
            value = arguments.get(parameter) if isinstance(arguments, Mapping) else None
            if value is None and spec.default is None:
                raise MCPError(INVALID_PARAMS, f"{name}: argument {parameter!r} is required ({spec.type})")
            if value is not None and spec.type != "str" and not _parses(str(value), spec.type):
                expected = _PROMPT_TYPE_WORDS[spec.type]
                raise MCPError(INVALID_PARAMS, f"{name}: argument {parameter!r}: expected {expected}, got {value!r}")
        try:
            return await call_next(ctx)
        except MCPError:
            raise
        except Exception as exc:  # anything else the SDK's rendering meets, said as the client's mistake
            raise MCPError(INVALID_PARAMS, f"{name}: {exc}") from None


_PROMPT_TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false"}


def _parses(text: str, type_name: str) -> bool:
    if type_name == "bool":
        return text.strip().lower() in ("true", "false", "1", "0")
    try:
        (int if type_name == "int" else float)(text)
    except ValueError:
        return False
    return True


def _name(item: Any) -> str | None:
    return item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
