"""`mcp-keygate serve` with the gateway's call replaced by a fixed answer: the MCP, HTTP and tool
layers alone (transport guards, SDK middleware, argument checks, the result, the call's log line and
metrics), with no routing, key lease, upstream request or store write. Compared with the forwarding
floor, it shows what keygate costs before its gateway does anything.

Run: python -m bench.stub_gateway serve --config … --transport streamable-http --port …
"""

from __future__ import annotations

import sys
from typing import Any

from mcp_keygate.calls import CallService
from mcp_keygate.cli import main
from mcp_keygate.schemas import AttemptOut, CompleteResult, UsageOut

ANSWER = CompleteResult(
    text='[gpt-4.1-mini] I received 1 message(s), system prompt: no. You said: "hello"',
    model="mini",
    provider="p",
    key_id="p:stub00",
    conversation_id="c_0123456789abcdef",
    finish_reason="stop",
    usage=UsageOut(input_tokens=5, output_tokens=23),
    cost_usd=0.0000388,
    attempts=[AttemptOut(model="mini", key_id="p:stub00", outcome="ok", status_code=200, retry_after_s=None)],
)


async def _fixed(self: CallService, request: Any, **_: Any) -> CompleteResult:
    return ANSWER


if __name__ == "__main__":
    CallService.complete = _fixed  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
