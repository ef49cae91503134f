"""The client's own model as the last resort: when no key of a route can answer within the call's
wait, and the client declared the MCP `sampling` capability, the conversation so far (system
prompt, history, the new turn) is sent to it with `sampling/createMessage`.

Only on connections that can carry a request back to the client (the session wires; sampling is
deprecated on 2026-07-28), only for routes the config lists in `[sampling] routes`, and only for
callers whose policy allows it (checked by the call service).
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import Context
from mcp_types import SamplingMessage, TextContent
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..calls import LastResort
from ..keys.secret import scrub
from ..messages import Completion, Message
from ..providers import CallParams
from ..route_report import AttemptRecord
from ..router import Routed, RouteFailed
from .services import ToolServices

CLIENT = "client"
WHY = "no key of the route could answer within the call's wait: answered by the client's own model (MCP sampling)"
_STOP = {"endTurn": "stop", "maxTokens": "length", "stopSequence": "stop"}


def client_model(ctx: Context, services: ToolServices) -> LastResort | None:
    """A last resort that asks the client's model, or None where this client cannot be asked."""
    session = ctx.request_context.session
    if session.protocol_version in MODERN_PROTOCOL_VERSIONS or not session.can_send_request:
        return None
    capabilities = session.client_capabilities
    if capabilities is None or capabilities.sampling is None:
        return None
    settings = services.config.sampling

    async def ask(messages: list[Message], params: CallParams, failed: RouteFailed) -> Routed:
        system = "\n\n".join(m.content for m in messages if m.role == "system") or None
        turns = [
            SamplingMessage(role=m.role, content=TextContent(type="text", text=m.content))
            for m in messages
            if m.role != "system"
        ]
        try:
            with anyio.fail_after(settings.timeout_s):
                result: Any = await session.create_message(
                    turns,
                    max_tokens=params.max_tokens or settings.max_tokens,
                    system_prompt=system,
                    temperature=params.temperature,
                    related_request_id=ctx.request_id,
                )
        except TimeoutError:
            raise _also_failed(failed, f"no answer within {settings.timeout_s:g} s") from None
        except Exception as exc:  # the client declined, or its model failed: the route's failure stands
            raise _also_failed(failed, scrub(str(exc), services.gateway.secrets)[:300] or type(exc).__name__) from None
        content = result.content
        if not isinstance(content, TextContent):
            raise _also_failed(failed, f"it answered with {getattr(content, 'type', 'no')} content, not text")
        limit = services.config.limits.max_prompt_chars
        if len(content.text) > limit:
            raise _also_failed(failed, f"its answer has {len(content.text)} characters, over [limits] max_prompt_chars")
        model = f"{CLIENT}:{_name(result.model)}"
        completion = Completion(content.text, _STOP.get(str(result.stop_reason), "stop"), upstream_model=model)
        record = AttemptRecord(model, CLIENT, "ok", None, None, WHY)
        return Routed(completion, model, CLIENT, CLIENT, [*failed.attempts, record])

    return ask


def _name(reported: object) -> str:
    """The client's model name as we keep it: printable, at most 64 characters (it is the client's
    word, stored with the conversation and shown in views)."""
    text = "".join(ch for ch in str(reported) if ch.isprintable())[:64]
    return text or "unknown"


def _also_failed(failed: RouteFailed, why: str) -> RouteFailed:
    message = f"{failed} The client's own model was asked as the last resort and failed: {why}."
    return RouteFailed(message, failed.attempts, failed.ready_in_s)
