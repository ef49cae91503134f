"""How each simulated key behaves: magic key prefixes, or a TOML scenario file.

Magic prefixes (no scenario needed):
  sim-ok-*            answers normally
  sim-ratelimit-*     429 per-minute rate limit with retry-after 30 s
  sim-ratelimit-5s-*  the same with retry-after 5 s (any whole number of seconds)
  sim-quota-*         quota / billing exhausted
  sim-invalid-*       rejected key (401)
  sim-overloaded-*    the model is overloaded (OpenAI/Gemini 503, Anthropic 529)
  sim-spendlimit-*    a spend limit is reached (OpenAI spend-limit 429, Anthropic enforced_spend_limit_reached,
                      Gemini 402 prepayment depleted)
  sim-streamcut-*     streams stop halfway without their end marker (plain replies: a truncated body)
  sim-streamerror-*   streams report an error event halfway (plain replies: a 500)
  sim-badjson-*       a structured answer (response_format, a forced tool, responseSchema) that is valid
                      JSON of the wrong shape; plain answers are normal
  sim-hang-*, sim-slowdrip-*, sim-reset-*, sim-html502-*, sim-html504-*, sim-empty200-*,
  sim-malformed-*, sim-huge-*   transport faults (see faults.py)
  anything else       answers normally

Scenario file (TOML), every table optional:
  [defaults]                  latency_ms, error_rate, rpm, tpm, rpd applied to every key
  [keys."<key>"]              behavior = "ok|ratelimit|quota|invalid|overloaded|spendlimit|streamcut|streamerror",
                              rpm, tpm, rpd (limits that answer 429 when exceeded),
                              latency_ms, error_rate (share of 500 answers), retry_after_s,
                              after = N, then = "<behavior>" (serve N requests normally, then
                              behave as `then`: a key that runs dry mid-conversation),
                              reply_words (pad answers to this many words: long streams),
                              recover_after_s (a failing key answers normally this long after its
                              first request: a rate limit that really ends),
                              replay = "<corpus entry>" (answer with a real recorded provider error,
                              status, headers and body; see simulator/corpus.py)
  [models."<model>"]          context_window (tokens; 400 context_length_exceeded beyond it)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .faults import TRANSPORT_FAULTS

Behavior = str  # one of BEHAVIORS
BEHAVIORS = (
    "ok",
    "ratelimit",
    "quota",
    "invalid",
    "overloaded",
    "spendlimit",
    "streamcut",
    "streamerror",
    "badjson",
    *TRANSPORT_FAULTS,
)
_MAGIC = re.compile(r"^sim-(" + "|".join(BEHAVIORS) + r")(?:-(\d+)s)?(?:-|$)")


@dataclass(frozen=True, slots=True)
class KeyBehavior:
    behavior: Behavior = "ok"
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    latency_ms: float = 0.0
    error_rate: float = 0.0
    retry_after_s: float = 30.0
    after: int | None = None
    then: Behavior | None = None
    reply_words: int | None = None
    recover_after_s: float | None = None
    replay: str | None = None  # answer every request with this corpus entry, byte for byte


@dataclass(slots=True)
class Scenario:
    defaults: KeyBehavior = field(default_factory=KeyBehavior)
    keys: dict[str, KeyBehavior] = field(default_factory=dict)
    context_windows: dict[str, int] = field(default_factory=dict)

    def behavior_for(self, key: str) -> KeyBehavior:
        if key in self.keys:
            return self.keys[key]
        match = _MAGIC.match(key)
        if not match:
            return self.defaults
        behavior = match.group(1)
        retry = float(match.group(2)) if match.group(2) else self.defaults.retry_after_s
        return replace(self.defaults, behavior=behavior, retry_after_s=retry)


class ScenarioError(ValueError):
    pass


_KEY_FIELDS = {
    "behavior",
    "rpm",
    "tpm",
    "rpd",
    "latency_ms",
    "error_rate",
    "retry_after_s",
    "after",
    "then",
    "reply_words",
    "recover_after_s",
    "replay",
}


def _behavior(data: dict[str, Any], where: str, base: KeyBehavior) -> KeyBehavior:
    unknown = set(data) - _KEY_FIELDS
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; expected {sorted(_KEY_FIELDS)}")
    for name in ("behavior", "then"):
        if name in data and data[name] not in BEHAVIORS:
            raise ScenarioError(f"{where}.{name}: expected one of {', '.join(BEHAVIORS)} (got {data[name]!r})")
    if ("after" in data) != ("then" in data):
        raise ScenarioError(f"{where}: `after` and `then` go together")
    if "replay" in data:
        _check_replay(data["replay"], where)
    return replace(base, **data)


def _check_replay(name: Any, where: str) -> None:
    from .corpus import CorpusError, load_corpus

    try:
        known = load_corpus()
    except CorpusError as exc:
        raise ScenarioError(f"the error corpus is broken: {exc}") from None
    if name not in known:
        hint = ", ".join(sorted(known)[:3])
        raise ScenarioError(f"{where}.replay: no corpus entry named {name!r} (names look like {hint}, …)")


def parse_scenario(data: dict[str, Any]) -> Scenario:
    unknown = set(data) - {"defaults", "keys", "models"}
    if unknown:
        raise ScenarioError(f"unknown table(s) {', '.join(sorted(unknown))}; expected defaults, keys, models")
    defaults = _behavior(data.get("defaults", {}), "defaults", KeyBehavior())
    keys = {k: _behavior(v, f"keys.{k}", defaults) for k, v in data.get("keys", {}).items()}
    windows = {}
    for model, spec in data.get("models", {}).items():
        if set(spec) - {"context_window"}:
            raise ScenarioError(f"models.{model}: only context_window is supported")
        windows[model] = int(spec["context_window"])
    return Scenario(defaults, keys, windows)


def load_scenario(path: str | Path) -> Scenario:
    try:
        return parse_scenario(tomllib.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
