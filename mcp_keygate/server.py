"""MCP wiring: the tools agents call, over the SDK's `MCPServer`.

Tools are thin: they validate, hand the call to `Keygate`, and turn its exceptions into tool
errors (`isError`) whose text tells the agent what to do next.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver import server as mcpserver_module
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.prompts.base import Prompt, UserMessage
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from . import __version__
from .auth import LOCAL_OWNER, TokenRegistry
from .config import PresetConfig
from .conversations import UnknownConversation
from .gateway import CallTimedOut, InvalidRequest, Keygate
from .keys.secret import scrub
from .policies import PolicyRefused
from .router import RequestRejected, RouteFailed
from .schemas import (
    CompleteResult,
    ConversationResult,
    ConversationsResult,
    InputMessage,
    KeyStatusResult,
    ModelsResult,
    ResetResult,
    UsageResult,
)
from .templates import render

CALL_ERRORS = (InvalidRequest, UnknownConversation, RouteFailed, RequestRejected, CallTimedOut, PolicyRefused)

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

    registry = tokens or TokenRegistry({})

    def caller(_ctx: Context | None = None) -> str:
        """Who is calling: what the HTTP auth guard established (over stdio, or without tokens: local)."""
        return registry.caller()

    config = gateway.config
    known_arguments: dict[str, set[str]] = {}
    # Static resources cannot tell who reads them: with policies in force, they point to the tools.
    policies_apply = bool(config.policies) and registry.enabled

    def forbidden_names() -> set[str]:
        """Preset tools and prompts the caller's policy does not allow, and reset_key for non-operators."""
        owner = caller()
        hidden = set() if gateway.policies.is_operator(owner) else {"reset_key"}
        policy = gateway.policies.for_token(owner)
        if policy is not None:
            hidden |= {name for name in config.presets if not policy.may_use_preset(config, name)}
        return hidden

    async def hide_what_the_policy_forbids(ctx: Any, call_next: Any) -> Any:
        """A token sees only the tools and prompts it may use."""
        result = await call_next(ctx)
        if ctx.method not in ("tools/list", "prompts/list") or not registry.enabled:
            return result
        hidden = forbidden_names()
        field = "tools" if ctx.method == "tools/list" else "prompts"
        if not hidden:
            return result
        if isinstance(result, dict):
            items = [item for item in result.get(field) or [] if _name(item) not in hidden]
            return {**result, field: items}
        items = getattr(result, field, None)
        if items is None:
            return result
        return result.model_copy(update={field: [item for item in items if _name(item) not in hidden]})

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

    with _logging_already_configured():
        server = MCPServer(
            "mcp-keygate",
            version=__version__,
            instructions=INSTRUCTIONS,
            lifespan=lifespan,
            log_level=log_level.upper(),  # type: ignore[arg-type]
            middleware=[reject_unknown_arguments]
            + ([hide_what_the_policy_forbids] if config.policies or config.server.operator_tokens is not None else []),
        )

    def tool_error(exc: Exception) -> ToolError:
        return ToolError(scrub(str(exc), gateway.secrets))

    def progress_for(ctx: Context) -> Callable[[str], Awaitable[None]]:
        progress = 0

        async def notify(message: str) -> None:
            nonlocal progress
            progress += 1
            log.info("%s", message)
            await ctx.report_progress(progress, None, message)

        return notify

    async def answered(owner: str, what: str, call: Awaitable[CompleteResult]) -> CompleteResult:
        """Run a complete-like call; count it, and turn its failures into tool errors."""
        try:
            result = await call
        except CALL_ERRORS as exc:
            log.info("%s by %s failed: %s", what, owner, type(exc).__name__)
            if metrics is not None:
                metrics.on_call(owner, type(exc).__name__)
            raise tool_error(exc) from None
        log.info("%s by %s answered by %s with key %s", what, owner, result.model, result.key_id)
        if metrics is not None:
            metrics.on_call(owner, "ok")
            metrics.on_usage(owner, result.model, result.key_id, result.usage.input_tokens, result.usage.output_tokens)
        return result

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
        owner = caller(ctx)
        call = gateway.complete(
            prompt=prompt,
            messages=messages,
            model=model,
            conversation_id=conversation_id,
            system=system,
            max_tokens=max_tokens,
            temperature=temperature,
            max_wait_s=max_wait_s,
            notify=progress_for(ctx),
            owner=owner,
        )
        return await answered(owner, "complete", call)

    @server.tool()
    async def list_models(ctx: Context) -> ModelsResult:
        """Models and routes, with how many keys are ready and when the next one will be."""
        return await gateway.list_models(caller(ctx))

    @server.tool()
    async def key_status(
        ctx: Context,
        provider: Annotated[str | None, Field(description="only this provider's keys")] = None,
    ) -> KeyStatusResult:
        """Every key's state (ready, cooling, exhausted, disabled), why, and for how long."""
        try:
            return await gateway.key_status(provider, caller(ctx))
        except InvalidRequest as exc:
            raise tool_error(exc) from None

    @server.tool()
    async def usage(
        ctx: Context, days: Annotated[int, Field(ge=1, le=400, description="today and the days before")] = 30
    ) -> UsageResult:
        """Tokens used per caller, model and key (with tokens configured: your own usage only)."""
        owner = caller(ctx)
        try:
            return await gateway.usage(owner if registry.enabled else None, days)
        except InvalidRequest as exc:
            raise tool_error(exc) from None

    for preset_name, preset in config.presets.items():
        server.add_tool(
            _preset_tool(preset_name, preset, gateway, caller, progress_for, answered),
            name=preset_name,
            description=preset.description,
        )
        server.add_prompt(
            Prompt.from_function(_preset_prompt(preset_name, preset), name=preset_name, description=preset.description)
        )

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
            owner = caller(ctx)
            if registry.enabled and not gateway.policies.is_operator(owner):
                log.warning("reset_key %s refused: %s is not an operator", key_id, owner)
                raise ToolError(
                    f"reset_key is for operators: token {owner!r} is not one ([server] operator_tokens, "
                    "or by default tokens that no policy governs)"
                )
            log.warning("reset_key %s requested by %s", key_id, owner)
            try:
                return await gateway.reset_key(key_id)
            except InvalidRequest as exc:
                raise tool_error(exc) from None

    @server.resource("keygate://keys", name="keys", mime_type="application/json")
    async def keys_resource() -> str:
        """Every key's state, why, and for how long (the key_status table)."""
        if policies_apply:
            return '{"note": "what a caller may see depends on its token\'s policy: use the key_status tool"}'
        return (await gateway.key_status()).model_dump_json(indent=2)

    @server.resource("keygate://models", name="models", mime_type="application/json")
    async def models_resource() -> str:
        """Models and routes, with how many keys are ready."""
        if policies_apply:
            return '{"note": "what a caller may see depends on its token\'s policy: use the list_models tool"}'
        return (await gateway.list_models()).model_dump_json(indent=2)

    @server.resource("keygate://conversations", name="conversations", mime_type="application/json")
    async def conversations_resource() -> str:
        """This server's local conversations (over HTTP with tokens, use the list_conversations tool)."""
        if registry.enabled:
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


@contextmanager
def _logging_already_configured() -> Iterator[None]:
    """Skip the SDK's logging set-up when logging is configured already (the CLI does it first).

    `MCPServer()` always calls it; it imports rich (≈25 ms of a stdio start) to build a handler that
    `logging.basicConfig` then discards, since the root logger has ours.
    """
    if not logging.getLogger().handlers:
        yield
        return
    original = mcpserver_module.configure_logging
    mcpserver_module.configure_logging = lambda *args, **kwargs: None
    try:
        yield
    finally:
        mcpserver_module.configure_logging = original


def _name(item: Any) -> str | None:
    return item.get("name") if isinstance(item, dict) else getattr(item, "name", None)


_TYPE_WORDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false"}


def _signature(preset: PresetConfig) -> list[inspect.Parameter]:
    """The preset's parameters as keyword-only arguments with types, defaults and descriptions."""
    params = []
    for name, spec in preset.parameters.items():
        described = Annotated[spec.python_type, Field(description=spec.description or _TYPE_WORDS[spec.type])]
        default = inspect.Parameter.empty if spec.default is None else spec.default
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=described))
    return params


def _preset_tool(
    name: str,
    preset: PresetConfig,
    gateway: Keygate,
    caller: Callable[[Context], str],
    progress_for: Callable[[Context], Callable[[str], Awaitable[None]]],
    answered: Callable[[str, str, Awaitable[CompleteResult]], Awaitable[CompleteResult]],
) -> Callable[..., Awaitable[CompleteResult]]:
    """A tool function whose signature is the preset's parameters (the SDK derives the schema from it)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("ctx", keyword, annotation=Context),
        inspect.Parameter(
            "conversation_id",
            keyword,
            default=None,
            annotation=Annotated[str | None, Field(description="continue this conversation; omit to start one")],
        ),
        inspect.Parameter(
            "max_wait_s",
            keyword,
            default=20.0,
            annotation=Annotated[float, Field(ge=0, le=600, description="how long to wait for a cooling key")],
        ),
    ]
    params = [*_signature(preset), *extra]

    async def run_preset(**arguments: Any) -> CompleteResult:
        ctx = arguments.pop("ctx")
        conversation_id = arguments.pop("conversation_id", None)
        max_wait_s = arguments.pop("max_wait_s", 20.0)
        owner = caller(ctx)
        call = gateway.run_preset(
            name,
            arguments,
            conversation_id=conversation_id,
            max_wait_s=max_wait_s,
            notify=progress_for(ctx),
            owner=owner,
        )
        return await answered(owner, name, call)

    run_preset.__signature__ = inspect.Signature(params, return_annotation=CompleteResult)  # type: ignore[attr-defined]
    run_preset.__annotations__ = {p.name: p.annotation for p in params} | {"return": CompleteResult}
    run_preset.__name__ = run_preset.__qualname__ = name
    return run_preset


def _preset_prompt(name: str, preset: PresetConfig) -> Callable[..., list[UserMessage]]:
    """The preset as an MCP prompt: its template filled with the arguments (and its system prompt first)."""
    params = _signature(preset)

    def render_prompt(**arguments: Any) -> list[UserMessage]:
        values = {k: v for k, v in arguments.items() if v is not None}
        for parameter, spec in preset.parameters.items():
            values.setdefault(parameter, spec.default)
        text = render(preset.template, values)
        return [UserMessage(f"{preset.system}\n\n{text}" if preset.system else text)]

    render_prompt.__signature__ = inspect.Signature(params, return_annotation=list[UserMessage])  # type: ignore[attr-defined]
    render_prompt.__annotations__ = {p.name: p.annotation for p in params} | {"return": list[UserMessage]}
    render_prompt.__name__ = render_prompt.__qualname__ = name
    return render_prompt
