"""The key table: rows from key records, for the `key_status` tool and `mcp-keygate status`."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from typing import Any

from .keys.rules import state_for
from .keys.state import Hold, KeyRecord
from .schemas import KeyStatusRow


def iso_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso_time(ts)


def _row(record: KeyRecord, hold: Hold | None, model: str | None, now: float) -> KeyStatusRow:
    ready_in = None
    if hold is not None and hold.until is not None:
        ready_in = round(max(0.0, hold.until - now), 1)
    return KeyStatusRow(
        key_id=record.key_id,
        provider=record.provider,
        mask=record.mask,
        state=hold.state.value if hold else "ready",
        model=model,
        ready_in_s=ready_in,
        reason=hold.reason if hold else None,
        requests=record.requests,
        failures=record.failures,
        last_status=record.last_status,
        last_used=_iso(record.last_used),
    )


def key_rows(records: list[KeyRecord], now: float) -> list[KeyStatusRow]:
    """One row per key, or one per model a key is cooling for; a key-wide state (or spent budget) wins.

    The states are those of `keys.rules.key_state`: the row of a key as a whole, or of one model."""
    rows: list[KeyStatusRow] = []
    for record in records:
        held = state_for(record, None, now)
        if held is not None:
            rows.append(_row(record, held, None, now))
            continue
        cooling = [(m, h) for m, h in sorted(record.model_holds.items()) if h.active(now)]
        if not cooling:
            rows.append(_row(record, None, None, now))
        for model, hold in cooling:
            rows.append(_row(record, hold, model, now))
    return rows


HEADERS = ["provider", "key id", "mask", "state", "scope", "ready in", "reason", "requests", "failures", "last used"]
EMPTY = "No keys recorded yet: start `mcp-keygate serve` once with your config, or check KEYGATE_STATE."


def _ago(iso: str | None, now: float) -> str:
    if iso is None:
        return "never"
    seconds = now - dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    return f"{duration(max(0.0, seconds))} ago"


def duration(seconds: float) -> str:
    """`42 s`, `12 min`, `6.0 h`: the same words in the CLI table, the demo and the status page."""
    if seconds <= 0:
        return "now"
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def table_cells(rows: list[KeyStatusRow], now: float, reason_chars: int = 60) -> list[list[str]]:
    """The table's cells, in HEADERS order (shared by the plain and the live table)."""
    return [
        [
            r.provider,
            r.key_id,
            r.mask,
            r.state,
            r.model or "all models",
            "-" if r.ready_in_s is None else duration(r.ready_in_s),
            (r.reason or "")[:reason_chars],
            str(r.requests),
            str(r.failures),
            _ago(r.last_used, now),
        ]
        for r in rows
    ]


# Narrow terminals drop the least needed columns first; the rest keep widths that fit their words.
_DROP_BELOW = {"requests": 150, "failures": 150, "provider": 130, "last used": 110, "mask": 100}  # ids name it
_MIN_WIDTH = {"key id": 13, "state": 9, "scope": 10, "ready in": 8, "reason": 12}
STATE_STYLES = {"ready": "green", "cooling": "yellow", "exhausted": "magenta", "disabled": "red"}


def live_table(rows: list[KeyStatusRow], now: float, width: int, title: str) -> Any:
    """The key table for a terminal `width` columns wide (rich): states and countdowns always whole,
    the reason takes what is left and wraps."""
    from rich.table import Table
    from rich.text import Text

    shown = [i for i, h in enumerate(HEADERS) if width >= _DROP_BELOW.get(h, 0)]
    table = Table(title=title, title_justify="left", expand=True, padding=(0, 1))
    for i in shown:
        header = HEADERS[i]
        if header == "reason":
            table.add_column(header, ratio=1, overflow="fold", min_width=_MIN_WIDTH[header])
        else:
            table.add_column(header, no_wrap=True, min_width=_MIN_WIDTH.get(header), overflow="ellipsis")
    for cells in table_cells(rows, now, reason_chars=200 if width >= 100 else 90):
        table.add_row(*[Text(cells[i], style=STATE_STYLES.get(cells[i], "")) if i == 3 else cells[i] for i in shown])
    return table


def render_table(rows: list[KeyStatusRow], now: float | None = None) -> str:
    """A plain-text table (no colours) that reads well in a terminal and in a file."""
    if not rows:
        return EMPTY
    return plain_table(HEADERS, table_cells(rows, time.time() if now is None else now))


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks, no colours."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def render_json(rows: list[KeyStatusRow]) -> str:
    return json.dumps({"keys": [r.model_dump() for r in rows]}, indent=2)
