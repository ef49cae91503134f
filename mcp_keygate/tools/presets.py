"""Each preset as an MCP tool (typed parameters, plus conversation_id and max_wait_s) and as an
MCP prompt of the same name.

The SDK derives a tool's schema from its function's signature, so each preset gets a function
whose signature is built from the preset's declared parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Prompt, UserMessage
from pydantic import Field

from ..complete_request import DEFAULT_MAX_WAIT_S, CompleteRequest
from ..config import PresetConfig
from ..schemas import CompleteResult
from ..templates import render
from .core import CALLS_A_MODEL, ConversationId, Files, Images, MaxWait
from .files import PRESET_ROOTS, gather
from .sampling import client_model
from .services import ToolServices

# Annotated built at run time from a preset's declared type (a type checker cannot see that type).
_ANNOTATED: Any = Annotated
_TYPE_WORDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false"}
_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def register_presets(server: MCPServer, services: ToolServices) -> None:
    for name, preset in services.config.presets.items():
        register_preset(server, services, name, preset)


def register_preset(server: MCPServer, services: ToolServices, name: str, preset: PresetConfig) -> None:
    """The preset as a tool and as a prompt of the same name."""
    server.add_tool(
        preset_tool(name, preset, services),
        name=name,
        title=f"{name} (preset)",
        description=preset.description,
        annotations=CALLS_A_MODEL,
    )
    prompt = Prompt.from_function(preset_prompt(name, preset), name=name, description=preset.description)
    server.add_prompt(prompt)


def parameters_of(preset: PresetConfig) -> list[inspect.Parameter]:
    """The preset's parameters as keyword-only arguments with types, defaults and descriptions."""
    params = []
    for name, spec in preset.parameters.items():
        words = _TYPE_WORDS[spec.type] + ("" if spec.default is None else f" (default {spec.default!r})")
        described = _ANNOTATED[spec.python_type, Field(description=spec.description or words)]
        default = inspect.Parameter.empty if spec.default is None else spec.default
        params.append(inspect.Parameter(name, _KEYWORD, default=default, annotation=described))
    return params


def _with_signature(function: Callable[..., Any], name: str, params: list[inspect.Parameter], returns: Any) -> None:
    function.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in params} | {"return": returns}
    function.__name__ = function.__qualname__ = name


def preset_tool(name: str, preset: PresetConfig, services: ToolServices) -> Callable[..., Awaitable[CompleteResult]]:
    """A tool function whose signature is the preset's parameters plus conversation_id and max_wait_s."""
    params = [
        *parameters_of(preset),
        inspect.Parameter("ctx", _KEYWORD, annotation=Context),
        inspect.Parameter("conversation_id", _KEYWORD, default=None, annotation=ConversationId),
        inspect.Parameter("max_wait_s", _KEYWORD, default=DEFAULT_MAX_WAIT_S, annotation=MaxWait),
    ]
    if preset.files:
        params.append(inspect.Parameter("files", _KEYWORD, default=None, annotation=Files))
    if preset.images:
        params.append(inspect.Parameter("images", _KEYWORD, default=None, annotation=Images))
    if preset.files or preset.images:
        roots = PRESET_ROOTS[(preset.files, preset.images)]
        params.append(inspect.Parameter("roots", _KEYWORD, default=None, annotation=roots))

    async def run_preset(**arguments: Any) -> CompleteResult:
        ctx = arguments.pop("ctx")
        files, images, roots = arguments.pop("files", None), arguments.pop("images", None), arguments.pop("roots", None)
        with services.tool_errors():
            attachments = gather(ctx, services.config, files, images, roots)
        base = CompleteRequest(
            conversation_id=arguments.pop("conversation_id", None),
            max_wait_s=arguments.pop("max_wait_s", DEFAULT_MAX_WAIT_S),
            attachments=attachments,
        )
        owner = services.caller()
        notify, last_resort = services.progress(ctx), client_model(ctx, services)
        call = services.gateway.calls.run_preset(
            name, arguments, base, caller=owner, notify=notify, last_resort=last_resort
        )
        return await services.answered(owner, name, call)

    _with_signature(run_preset, name, params, CompleteResult)
    return run_preset


def preset_prompt(name: str, preset: PresetConfig) -> Callable[..., list[UserMessage]]:
    """The preset as an MCP prompt: its template filled with the arguments (and its system prompt first)."""

    def render_prompt(**arguments: Any) -> list[UserMessage]:
        values = {k: v for k, v in arguments.items() if v is not None}
        for parameter, spec in preset.parameters.items():
            values.setdefault(parameter, spec.default)
        text = render(preset.template, values)
        return [UserMessage(f"{preset.system}\n\n{text}" if preset.system else text)]

    _with_signature(render_prompt, name, parameters_of(preset), list[UserMessage])
    return render_prompt
