"""One way every front door (MCP tools, the REST endpoints) runs a call: log it by caller, count it
in the metrics, and let its failure through for the front door to phrase."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from . import tracing
from .errors import KeygateError
from .schemas import CompleteResult

if TYPE_CHECKING:
    from .activity import Activity
    from .metrics import Metrics

log = logging.getLogger("mcp_keygate.server")


async def accounted(
    metrics: Metrics | None,
    owner: str,
    what: str,
    call: Awaitable[CompleteResult],
    activity: Activity | None = None,
) -> CompleteResult:
    """Await `call`; log and count it, with its cost (a KeygateError is re-raised after being counted)."""
    with tracing.call_span(owner, what) as span:
        try:
            result = await call
        except KeygateError as exc:
            tracing.end_call(span, None, exc)
            log.info("%s by %s failed: %s", what, owner, type(exc).__name__)
            if metrics is not None:
                metrics.on_call(owner, type(exc).__name__)
            raise
        tracing.end_call(span, result)
    log.info("%s by %s answered by %s with key %s", what, owner, result.model, result.key_id)
    # A client's own model names itself: one label for all of them keeps the series bounded.
    model = "client" if result.provider == "client" else result.model
    if activity is not None:
        activity.on_cost(owner, model, result.key_id, result.cost_usd)
    if metrics is not None:
        usage = result.usage
        metrics.on_call(owner, "ok")
        metrics.on_usage(owner, model, result.key_id, usage.input_tokens, usage.output_tokens)
        metrics.on_cost(owner, model, result.key_id, result.cost_usd)
    return result
