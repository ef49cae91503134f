"""Usage accounting: tokens in and out per caller (token name), model and key, summed over days.

The counters are written with each call's turns, in the same transaction, so usage never
disagrees with the conversations; this module only adds them up and lays them out.
"""

from __future__ import annotations

from .schemas import UsageLine, UsageResult
from .status import plain_table
from .store.base import UsageRow


def usage_result(rows: list[UsageRow], since: str) -> UsageResult:
    """Rows of several days folded into one line per (owner, model, key), biggest spenders first."""
    totals: dict[tuple[str, str, str], list[int]] = {}
    for row in rows:
        line = totals.setdefault((row.owner, row.model, row.key_id), [0, 0, 0])
        line[0] += row.requests
        line[1] += row.input_tokens
        line[2] += row.output_tokens
    lines = [
        UsageLine(owner=o, model=m, key_id=k, requests=r, input_tokens=i, output_tokens=out)
        for (o, m, k), (r, i, out) in totals.items()
    ]
    lines.sort(key=lambda u: (-(u.input_tokens + u.output_tokens), u.owner, u.model, u.key_id))
    return UsageResult(
        since=since,
        lines=lines,
        total_requests=sum(u.requests for u in lines),
        total_input_tokens=sum(u.input_tokens for u in lines),
        total_output_tokens=sum(u.output_tokens for u in lines),
    )


def render_usage(result: UsageResult) -> str:
    """A plain-text table for `mcp-keygate status --usage`."""
    if not result.lines:
        return f"No usage recorded since {result.since}."
    headers = ["caller", "model", "key id", "requests", "tokens in", "tokens out"]
    table = [
        [u.owner, u.model, u.key_id, str(u.requests), str(u.input_tokens), str(u.output_tokens)] for u in result.lines
    ]
    table.append(
        ["total", "", "", str(result.total_requests), str(result.total_input_tokens), str(result.total_output_tokens)]
    )
    return f"Usage since {result.since} (UTC):\n" + plain_table(headers, table)
