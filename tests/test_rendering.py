"""The live key tables (status --watch, the demo's board) read well at 80 and 120 columns: states,
scopes and countdowns stay whole, lines never run past the terminal, the reason wraps."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from mcp_keygate.demo import Board
from mcp_keygate.schemas import KeyStatusRow
from mcp_keygate.status import live_table

LONG_REASON = "429 rate_limit_exceeded: Rate limit reached for gpt-4.1-mini in organization org-x on requests per min"


def rows() -> list[KeyStatusRow]:
    states = [
        ("ready", None, None),
        ("cooling", "gpt-4.1-mini", 754.0),
        ("exhausted", None, 21_600.0),
        ("disabled", None, None),
    ]
    return [
        KeyStatusRow(
            key_id=f"openai:{i:06x}",
            provider="openai",
            mask="…abcd",
            state=state,
            model=model,
            ready_in_s=ready,
            reason=LONG_REASON if state != "ready" else None,
            requests=12_345,
            failures=67,
            last_status=429,
            last_used="2026-11-27T08:00:00Z",
        )
        for i, (state, model, ready) in enumerate(states)
    ]


def rendered(renderable, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    console.print(renderable)
    return console.file.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 120])
def test_status_watch_table_fits_and_keeps_states_whole(width):
    lines = rendered(live_table(rows(), time.time(), width, "keys"), width)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines)
    for word in ("ready", "cooling", "exhausted", "disabled", "gpt-4.1-mini", "13 min", "6.0 h", "openai:000001"):
        assert word in text, (word, text)
    assert "rate_limit_exceeded" in text and "Rate limit" in text  # wrapped, not cut to nothing
    if width >= 120:
        assert "last used" in text and "…abcd" in text


@pytest.mark.parametrize("width", [80, 120])
def test_demo_key_table_fits_and_keeps_states_whole(width):
    board = Board(keys=[r.model_dump() for r in rows()], keys_at=time.monotonic())
    lines = rendered(board.key_table(), width)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines)
    for word in ("cooling", "exhausted", "disabled", "13 min", "6.0 h", "openai:000003"):
        assert word in text, (word, text)
