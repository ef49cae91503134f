"""`mcp-keygate demo`: the real server over stdio, a real MCP client, and the bundled simulator.

Offline and keyless: the simulator plays OpenAI, Anthropic and Gemini. Their keys are
rate-limited, out of quota, rejected, overloaded or fine, and a five-turn conversation shows key
rotation, fallback across all three providers (each receiving the whole conversation in its own
wire format), and a cooled key coming back through one probe. In a terminal the key table is live,
with countdowns; piped to a file it prints the same story as plain text (no control codes).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .status import STATE_STYLES, duration

OPENAI_KEYS = ["sim-ratelimit-8s-demo0000a1", "sim-quota-demo0000b2", "sim-ok-demo0000c3"]
ANTHROPIC_KEYS = ["sim-invalid-demo0000d4", "sim-overloaded-demo0000e5", "sim-ok-demo0000f6"]
GEMINI_KEYS = ["sim-ok-demo0000g7"]
DEMO_KEYS = {
    "DEMO_OPENAI_KEYS": ",".join(OPENAI_KEYS),
    "DEMO_ANTHROPIC_KEYS": ",".join(ANTHROPIC_KEYS),
    "DEMO_GEMINI_KEYS": ",".join(GEMINI_KEYS),
}
# The good OpenAI key allows two requests a minute (its headers say so, and keygate listens); the
# good Anthropic key runs out of credit after one answer — so the conversation has to travel.
# The rate-limited OpenAI key's limit really ends after 8 s, so the last turn shows its probe succeed.
SCENARIO = {
    "keys": {
        OPENAI_KEYS[0]: {"behavior": "ratelimit", "retry_after_s": 8, "recover_after_s": 8},
        OPENAI_KEYS[2]: {"rpm": 2},
        # A response Anthropic really sent (from the simulator's corpus of real provider errors).
        ANTHROPIC_KEYS[1]: {"replay": "anthropic-529-overloaded"},
        ANTHROPIC_KEYS[2]: {"after": 1, "then": "quota"},
    }
}
PROMPTS = [
    "Hi! Which model are you?",
    "Give me one tip for naming variables.",
    "Summarise what I asked you so far.",
    "Which providers have answered me?",
    "Last one: are we back where we started?",
]
OUTCOME_STYLE = {"ok": "green", "rate_limited": "yellow", "quota_exhausted": "magenta", "auth_failed": "red"}


def _config(sim_url: str, state: Path) -> str:
    return f"""
[state]
backend = "sqlite"
path = "{state.as_posix()}"

[providers.openai]
type = "openai"
base_url = "{sim_url}/v1"
keys = ["${{DEMO_OPENAI_KEYS}}"]
strategy = "priority"

[providers.anthropic]
type = "anthropic"
base_url = "{sim_url}"
keys = ["${{DEMO_ANTHROPIC_KEYS}}"]
strategy = "priority"

[providers.gemini]
type = "gemini"
base_url = "{sim_url}"
keys = ["${{DEMO_GEMINI_KEYS}}"]

[models.gpt]
provider = "openai"
model = "gpt-4.1-mini"

[models.claude]
provider = "anthropic"
model = "claude-haiku-4-5"
max_output_tokens = 1024

[models.gemini]
provider = "gemini"
model = "gemini-2.5-flash"

[routes]
default = ["gpt", "claude", "gemini"]
"""


@dataclass
class Board:
    """Everything the screen shows; rendered afresh on every refresh (countdowns tick locally)."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    keys_at: float = 0.0
    attempts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    turns: list[tuple[str, str, str]] = field(default_factory=list)  # prompt, model/key, answer
    note: str = ""

    def key_table(self) -> Table:
        elapsed = time.monotonic() - self.keys_at
        table = Table(title="Keys", title_justify="left", expand=True)
        widths = {"key id": 16, "mask": 5, "state": 9, "scope": 10, "ready in": 8}
        for header, width in widths.items():  # whole words always; the reason takes what is left
            table.add_column(header, overflow="ellipsis", no_wrap=True, min_width=width)
        table.add_column("reason", ratio=1, overflow="fold", min_width=12)
        for k in self.keys:
            ready = "-" if k["ready_in_s"] is None else duration(k["ready_in_s"] - elapsed)
            state = k["state"]
            table.add_row(
                k["key_id"],
                k["mask"],
                Text(state, style=STATE_STYLES.get(state, "")),
                k["model"] or "all models",
                ready,
                (k["reason"] or "")[:50],
            )
        return table

    def attempt_table(self) -> Table:
        table = Table(title="Attempts", title_justify="left", expand=True)
        for header in ("turn", "model", "key id", "status", "outcome"):
            table.add_column(header, no_wrap=True)
        for turn, a in self.attempts[-10:]:
            wait = f", retry after {a['retry_after_s']:.0f} s" if a["retry_after_s"] else ""
            outcome = Text(a["outcome"] + wait, style=OUTCOME_STYLE.get(a["outcome"], "cyan"))
            table.add_row(str(turn), a["model"], a["key_id"], str(a["status_code"] or "-"), outcome)
        return table

    def conversation(self) -> Panel:
        lines = Text()
        for i, (prompt, who, answer) in enumerate(self.turns, 1):
            lines.append(f"{i}. you: {prompt}\n", style="bold")
            lines.append(f"   {who}: ", style="cyan")
            lines.append(answer + "\n")
        return Panel(lines or Text("(starting)"), title="Conversation", title_align="left")

    def __rich__(self) -> Group:
        parts: list[Any] = [self.key_table(), self.attempt_table(), self.conversation()]
        if self.note:
            parts.append(Text(self.note, style="bold yellow"))
        return Group(*parts)


class Screen:
    """Live in a terminal; plain, step-by-step text when piped (same facts, no control codes)."""

    def __init__(self, console: Console, board: Board) -> None:
        self.console = console
        self.board = board
        self.live = console.is_terminal
        self._live: Live | None = None

    def __enter__(self) -> Screen:
        if self.live:
            self._live = Live(self.board, console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def turn_done(self, turn: int) -> None:
        if self.live:
            return
        prompt, who, answer = self.board.turns[-1]
        self.console.print(f"turn {turn}  you: {prompt}")
        self.console.print(f"        {who}: {answer}")
        for n, a in self.board.attempts:
            if n == turn:
                wait = f", retry after {a['retry_after_s']:.0f} s" if a["retry_after_s"] else ""
                status = a["status_code"] or "-"
                self.console.print(f"    {a['model']:<7} {a['key_id']:<18} {status!s:>4}  {a['outcome']}{wait}")
        self.console.print()

    def say(self, text: str) -> None:
        self.board.note = text
        if not self.live:
            self.console.print(text)

    def keys(self, title: str) -> None:
        if not self.live:
            self.console.print(title)
            self.console.print(self.board.key_table())
            self.console.print()


async def _conversation(sim_url: str, workdir: Path, console: Console) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    config_path = workdir / "keygate.toml"
    config_path.write_text(_config(sim_url, workdir / "state.db"), encoding="utf-8")
    env = {**os.environ, **DEMO_KEYS, "KEYGATE_CONFIG": str(config_path)}
    env.pop("KEYGATE_STATE", None)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_keygate", "serve", "--log-level", "WARNING"], env=env
    )
    board = Board()
    summary: dict[str, Any] = {"models": [], "attempts": 0, "errors": 0}
    started = time.perf_counter()
    async with Client(params) as client:
        console.print(f"Server started over stdio in {time.perf_counter() - started:.2f} s.\n")

        async def refresh_keys() -> None:
            status = await client.call_tool("key_status", {})
            board.keys, board.keys_at = status.structured_content["keys"], time.monotonic()

        with Screen(console, board) as screen:
            await refresh_keys()
            conversation_id = None
            for turn, prompt in enumerate(PROMPTS, 1):
                if turn == len(PROMPTS):
                    await _wait_for_recovery(board, screen, refresh_keys)
                args: dict[str, Any] = {"prompt": prompt}
                if conversation_id:
                    args["conversation_id"] = conversation_id
                else:
                    args["system"] = "You are a concise assistant."
                screen.say(f"turn {turn}: asking…")
                result = await client.call_tool("complete", args)
                if result.is_error:
                    summary["errors"] += 1
                    board.turns.append((prompt, "error", getattr(result.content[0], "text", "")))
                else:
                    data = result.structured_content
                    conversation_id = data["conversation_id"]
                    board.attempts += [(turn, a) for a in data["attempts"]]
                    board.turns.append((prompt, f"{data['model']} via {data['key_id']}", data["text"]))
                    summary["models"].append(data["model"])
                    summary["attempts"] += len(data["attempts"])
                board.note = ""
                await refresh_keys()
                screen.turn_done(turn)
                if screen.live:
                    await anyio.sleep(1.0)  # time to read
            board.note = ""
            screen.keys("Key status at the end:")
    summary["keys"] = board.keys
    summary["conversation_id"] = conversation_id
    return summary


async def _wait_for_recovery(board: Board, screen: Screen, refresh_keys: Any) -> None:
    """Wait (visibly) for the rate-limited OpenAI key's cooldown to end, so the last turn shows the probe."""
    cooling = [k for k in board.keys if k["state"] == "cooling" and k["provider"] == "openai"]
    waits = [k["ready_in_s"] for k in cooling if k["ready_in_s"] is not None and k["ready_in_s"] < 20]
    if not waits:
        return
    first = min(cooling, key=lambda k: k["ready_in_s"] if k["ready_in_s"] is not None else 1e9)
    screen.keys("Key status before the last turn:")
    screen.say(
        f"Waiting {min(waits):.0f} s for {first['key_id']}'s cooldown to end: the next call sends it exactly "
        "one probe request…"
    )
    deadline = time.monotonic() + min(waits) + 0.3
    while time.monotonic() < deadline:
        await anyio.sleep(0.25)
    await refresh_keys()


def _summary(console: Console, summary: dict[str, Any]) -> None:
    models = summary["models"]
    states: dict[str, int] = {}
    for k in summary["keys"]:
        states[k["state"]] = states.get(k["state"], 0) + 1
    console.print(
        f"\nSummary: {len(models)} of {len(PROMPTS)} turns answered, by {' → '.join(models)}, "
        f"in {summary['attempts']} upstream attempts; no turn lost, and each model received the whole "
        "conversation in its own API's format."
    )
    console.print("Keys now: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())) + ".")
    console.print(
        "\nNext: register it with your agent —\n"
        "  mcp-keygate init  (writes keygate.toml, a commented starter config to fill in)\n"
        "  mcp-keygate install claude-desktop --config keygate.toml  (or claude-code, cursor; --print only shows it)"
    )


def run_demo() -> int:
    from .simulator import SimulatorThread, parse_scenario

    console = Console(highlight=False, markup=False)
    if not console.is_terminal:
        console = Console(highlight=False, markup=False, width=120)
    console.print(
        "mcp-keygate demo — offline, no API keys: a simulator plays OpenAI, Anthropic and Gemini.\n"
        "Route: gpt → claude → gemini. OpenAI keys: one rate-limited, one out of quota, one good for 2 rpm. "
        "Anthropic keys: one rejected, one overloaded, one with credit for a single answer. Gemini: one good key.\n"
    )
    scenario = parse_scenario(SCENARIO)
    with tempfile.TemporaryDirectory(prefix="keygate-demo-") as tmp, SimulatorThread(scenario) as sim:
        summary = anyio.run(_conversation, sim.url, Path(tmp), console)
    _summary(console, summary)
    return 0 if summary["errors"] == 0 and len(summary["models"]) == len(PROMPTS) else 1
