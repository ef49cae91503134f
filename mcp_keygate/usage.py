"""Usage accounting: tokens in and out, and what they cost, per caller (token name), model and key,
summed over days.

The counters are written with each call's turns, in the same transaction, so usage never
disagrees with the conversations; this module only adds them up and lays them out. A request whose
price was unknown is counted apart (`unpriced`), never as costing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .pricing import rounded
from .schemas import UsageLine, UsageResult
from .status import plain_table
from .store.base import UsageRow


@dataclass(slots=True)
class _Sum:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0

    def add(self, row: UsageRow) -> None:
        self.requests += row.requests
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cost_usd += row.cost_usd
        self.unpriced += row.unpriced

    @property
    def cost(self) -> float | None:
        return rounded(self.cost_usd) if self.requests > self.unpriced else None


def usage_result(rows: list[UsageRow], since: str) -> UsageResult:
    """Rows of several days folded into one line per (owner, model, key), biggest spenders first."""
    totals: dict[tuple[str, str, str], _Sum] = {}
    overall = _Sum()
    for row in rows:
        totals.setdefault((row.owner, row.model, row.key_id), _Sum()).add(row)
        overall.add(row)
    lines = [
        UsageLine(
            owner=o,
            model=m,
            key_id=k,
            requests=s.requests,
            input_tokens=s.input_tokens,
            output_tokens=s.output_tokens,
            cost_usd=s.cost,
            unpriced_requests=s.unpriced,
        )
        for (o, m, k), s in totals.items()
    ]
    lines.sort(key=lambda u: (-(u.cost_usd or 0.0), -(u.input_tokens + u.output_tokens), u.owner, u.model, u.key_id))
    return UsageResult(
        since=since,
        lines=lines,
        total_requests=overall.requests,
        total_input_tokens=overall.input_tokens,
        total_output_tokens=overall.output_tokens,
        total_cost_usd=overall.cost,
        unpriced_requests=overall.unpriced,
    )


def usd_cell(cost: float | None, unpriced: int) -> str:
    """`$0.0123`, `unknown`, or `$0.0123 + 2 unpriced` — an unknown price is never shown as $0."""
    if cost is None:
        return "unknown"
    shown = f"${cost:.6f}" if cost < 0.01 else f"${cost:.4f}" if cost < 100 else f"${cost:,.2f}"
    return f"{shown} + {unpriced} unpriced" if unpriced else shown


def render_usage(result: UsageResult) -> str:
    """A plain-text table for `mcp-keygate status --usage`."""
    if not result.lines:
        return f"No usage recorded since {result.since}."
    headers = ["caller", "model", "key id", "requests", "tokens in", "tokens out", "cost (USD)"]
    table = [
        [
            u.owner,
            u.model,
            u.key_id,
            str(u.requests),
            str(u.input_tokens),
            str(u.output_tokens),
            usd_cell(u.cost_usd, u.unpriced_requests),
        ]
        for u in result.lines
    ]
    table.append(
        [
            "total",
            "",
            "",
            str(result.total_requests),
            str(result.total_input_tokens),
            str(result.total_output_tokens),
            usd_cell(result.total_cost_usd, result.unpriced_requests),
        ]
    )
    return f"Usage since {result.since} (UTC):\n" + plain_table(headers, table)
