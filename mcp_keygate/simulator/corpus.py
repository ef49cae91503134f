"""The corpus of real provider error responses: what each provider really sent, where it was seen,
and what mcp-keygate must make of it.

One JSON file per provider in `corpus/` (shipped with the package, so the simulator can replay any
entry by name: `[keys."k"] replay = "NAME"` in a scenario). Each file is a list of entries:

  name            unique, kebab-case
  provider        openai | azure | anthropic | gemini | groq | mistral | deepseek | openrouter
  signal          one line for the docs' classification table
  source          the public page the response was taken from
  completed_from  (optional) what the source did not show and where the completion came from
  status          the HTTP status
  headers         the response headers that matter (content-type at least)
  body            the JSON body, or `body_text` for a body that is not JSON
  expect          outcome, key_state, wait, tolerance_s, next

`wait` is seconds, null (no wait of the provider's own: the pool's defaults apply), a rule
("next_month_utc", "pacific_midnight", "utc_midnight"), or {"until": ISO-8601, "else": rule} for a
reset time written in the reply (a replay after that time is stale, and the rule applies).
`next` is what the call does after this reply: "other_key" (the same model on the next key),
"retry_then_next_model" (one retry on another key, then the next model), "next_model", or
"error_to_caller".
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..resets import seconds_to_next_month_utc, seconds_to_pacific_midnight, seconds_to_utc_midnight, seconds_until

PROVIDERS = ("openai", "azure", "anthropic", "gemini", "groq", "mistral", "deepseek", "openrouter")
OUTCOMES = (
    "rate_limited",
    "quota_exhausted",
    "auth_failed",
    "overloaded",
    "context_too_long",
    "model_not_found",
    "bad_request",
    "upstream_error",
    "timeout",
)
KEY_STATES = ("ready", "cooling", "exhausted", "disabled")
NEXT = ("other_key", "retry_then_next_model", "next_model", "error_to_caller")
RULES = ("next_month_utc", "pacific_midnight", "utc_midnight")
_FIELDS = {"name", "provider", "signal", "source", "completed_from", "status", "headers", "body", "body_text", "expect"}
_EXPECT = {"outcome", "key_state", "wait", "tolerance_s", "next", "note"}
_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class CorpusError(ValueError):
    """A malformed corpus entry; the message is one line naming the file, the entry and the problem."""


@dataclass(frozen=True, slots=True)
class Expectation:
    outcome: str
    key_state: str
    wait: Any
    tolerance_s: float
    next: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class CorpusEntry:
    name: str
    provider: str
    signal: str
    source: str
    status: int
    headers: dict[str, str]
    expect: Expectation
    body: Any = None
    body_text: str | None = None
    completed_from: str = ""
    where: str = field(default="", compare=False)

    def body_bytes(self) -> bytes:
        """The body as the simulator sends it (JSON compacted; `body_text` byte for byte)."""
        if self.body_text is not None:
            return self.body_text.encode("utf-8")
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def corpus_dir() -> Path:
    return Path(str(resources.files("mcp_keygate.simulator") / "corpus"))


@cache
def load_corpus(directory: str | None = None) -> dict[str, CorpusEntry]:
    """Every entry by name, from the shipped corpus (or `directory`); raises CorpusError on a bad entry."""
    root = Path(directory) if directory else corpus_dir()
    entries: dict[str, CorpusEntry] = {}
    for path in sorted(root.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorpusError(f"{path.name}: not readable JSON ({exc})") from None
        if not isinstance(data, list):
            raise CorpusError(f"{path.name}: expected a list of entries")
        for index, item in enumerate(data):
            entry = parse_entry(item, f"{path.name}[{index}]")
            if entry.name in entries:
                earlier = entries[entry.name].where
                raise CorpusError(f"{entry.where}: the name {entry.name!r} is already used by {earlier}")
            entries[entry.name] = entry
    return entries


def parse_entry(item: Any, where: str) -> CorpusEntry:
    """One entry, checked field by field."""
    if not isinstance(item, dict):
        raise CorpusError(f"{where}: an entry must be an object")
    name = item.get("name")
    if isinstance(name, str):
        where = f"{where} ({name})"
    _require(set(item) <= _FIELDS, where, f"unknown field(s) {', '.join(sorted(set(item) - _FIELDS))}")
    _require(isinstance(name, str) and bool(_NAME.match(name)), where, "name must be kebab-case text")
    for text in ("signal", "source"):
        _require(isinstance(item.get(text), str) and bool(item[text].strip()), where, f"{text} is required text")
    _require(item.get("provider") in PROVIDERS, where, f"provider must be one of {', '.join(PROVIDERS)}")
    status = item.get("status")
    _require(isinstance(status, int) and 400 <= status <= 599, where, "status must be an HTTP error status")
    headers = item.get("headers", {})
    _require(
        isinstance(headers, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()),
        where,
        "headers must map names to text",
    )
    _require(("body" in item) != ("body_text" in item), where, "give exactly one of body and body_text")
    _require(isinstance(item.get("body_text", ""), str), where, "body_text must be text")
    return CorpusEntry(
        name=str(name),
        provider=item["provider"],
        signal=item["signal"],
        source=item["source"],
        status=int(status or 0),
        headers={k.lower(): v for k, v in headers.items()},
        expect=_expectation(item.get("expect"), where),
        body=item.get("body"),
        body_text=item.get("body_text"),
        completed_from=str(item.get("completed_from") or ""),
        where=where,
    )


def _expectation(data: Any, where: str) -> Expectation:
    _require(isinstance(data, dict), where, "expect must be an object")
    _require(set(data) <= _EXPECT, where, f"unknown expect field(s) {', '.join(sorted(set(data) - _EXPECT))}")
    _require(data.get("outcome") in OUTCOMES, where, f"expect.outcome must be one of {', '.join(OUTCOMES)}")
    _require(data.get("key_state") in KEY_STATES, where, f"expect.key_state must be one of {', '.join(KEY_STATES)}")
    _require(data.get("next") in NEXT, where, f"expect.next must be one of {', '.join(NEXT)}")
    _require("wait" in data, where, "expect.wait is required (null when the provider names none)")
    _check_wait(data["wait"], where)
    tolerance = data.get("tolerance_s", 2.0)
    _require(isinstance(tolerance, int | float) and tolerance >= 0, where, "expect.tolerance_s must be >= 0")
    return Expectation(
        data["outcome"], data["key_state"], data["wait"], float(tolerance), data["next"], str(data.get("note") or "")
    )


def _check_wait(wait: Any, where: str) -> None:
    if wait is None or (isinstance(wait, int | float) and not isinstance(wait, bool) and wait >= 0):
        return
    if isinstance(wait, str):
        _require(wait in RULES, where, f"expect.wait rule must be one of {', '.join(RULES)}")
        return
    _require(isinstance(wait, dict) and set(wait) == {"until", "else"}, where, "expect.wait: {until, else}")
    _require(wait["else"] in RULES, where, f"expect.wait.else must be one of {', '.join(RULES)}")
    try:
        dt.datetime.fromisoformat(str(wait["until"]).replace("Z", "+00:00"))
    except ValueError:
        raise CorpusError(f"{where}: expect.wait.until is not an ISO-8601 time") from None


def _require(condition: bool, where: str, problem: str) -> None:
    if not condition:
        raise CorpusError(f"{where}: {problem}")


def expected_wait(wait: Any, now: dt.datetime | None = None) -> float | None:
    """Seconds an entry's `wait` stands for at `now` (None: the provider named no wait)."""
    if wait is None or isinstance(wait, int | float):
        return None if wait is None else float(wait)
    if isinstance(wait, dict):
        until = dt.datetime.fromisoformat(str(wait["until"]).replace("Z", "+00:00"))
        left = seconds_until(until, now)
        return left if left is not None else expected_wait(wait["else"], now)
    rules = {
        "next_month_utc": seconds_to_next_month_utc,
        "pacific_midnight": seconds_to_pacific_midnight,
        "utc_midnight": seconds_to_utc_midnight,
    }
    return rules[wait](now)


def describe_wait(wait: Any) -> str:
    """The wait in words, for the docs."""
    if wait is None:
        return "none named (pool default)"
    if isinstance(wait, int | float):
        return f"{wait:g} s"
    words = {
        "next_month_utc": "until 00:00 UTC on the 1st",
        "pacific_midnight": "until midnight Pacific",
        "utc_midnight": "until 00:00 UTC",
    }
    if isinstance(wait, dict):
        return f"until the time it states, else {words[wait['else']]}"
    return words[wait]
