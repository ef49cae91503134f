"""What a failed call tells the agent: every attempt, each model's keys by state, and when to retry.

The key states come from `keys.rules.key_state`, like every other view of the keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import Config
from .keys.base import KeyPool
from .keys.rules import key_state
from .keys.state import KeyState


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    model: str
    key_id: str
    outcome: str
    status_code: int | None
    retry_after_s: float | None
    reason: str


async def failure_message(
    config: Config,
    pool: KeyPool,
    chain: list[str],
    attempts: list[AttemptRecord],
    wait: float | None,
    too_long: bool = False,
    unreachable: dict[str, str] | None = None,
    missing: set[str] | None = None,
    invalid_output: bool = False,
) -> str:
    """Every attempt, each model's keys by state, unreachable providers by URL, and what to do."""
    lines = [f"No model of [{', '.join(chain)}] could answer."]
    providers = list(dict.fromkeys(config.models[name].provider for name in chain))
    down = {p: why for p, why in (unreachable or {}).items() if p in providers}
    if too_long:
        lines[0] += (
            " The conversation is longer than the context window of every model left in the route:"
            " start a new conversation, shorten the prompt, or add a model with a larger context_window."
        )
    if attempts:
        lines.append("Attempts:")
        for a in attempts:
            retry = f", retry after {a.retry_after_s:g} s" if a.retry_after_s else ""
            key = f" with key {a.key_id}" if a.key_id else ""  # unsupported_input: skipped, no key used
            lines.append(f"  - {a.model}{key}: {a.outcome}{retry} — {a.reason}")
    for name in chain:
        lines.append(f"  {name}: {await model_summary(config, pool, name)}")
    for provider, why in down.items():
        url = config.providers[provider].resolved_base_url()
        lines.append(f"  providers.{provider}.base_url = {url}: {why}")
    for name in chain:
        if name in (missing or ()):
            lines.append(
                f"  models.{name}.model = {config.upstream_model(name)!r}: the provider does not know this model "
                "(check the spelling, or `mcp-keygate models PROVIDER`)"
            )
    if invalid_output:
        lines.append(
            "No answer fitted response_schema (each attempt above says how it did not): simplify the schema, "
            "or route to a model that follows schemas well, then retry."
        )
    elif not too_long:
        lines.append(_what_to_do(wait, down, providers, bool(missing)))
    return "\n".join(lines)


def _what_to_do(wait: float | None, down: dict[str, str], providers: list[str], missing: bool = False) -> str:
    if down and (wait is None or len(down) == len(providers)):
        return (
            "Nothing left in the route can be reached: check the base_url above and that the service is "
            "running (and reachable from this machine), then retry."
        )
    if wait is None and missing:
        return "No model left in the route is known to its provider: fix the model names above, then retry."
    if wait is None:
        return (
            "No key will become usable by itself: fix or replace the disabled keys (see key_status), "
            "or add another model to the route."
        )
    return f"The earliest key is ready again in {math.ceil(wait)} s: retry then, or pass a larger max_wait_s."


async def model_summary(config: Config, pool: KeyPool, name: str) -> str:
    """`2 cooling, 1 exhausted, 1 ready of 4 keys` for one model of the route."""
    model = config.models[name]
    upstream = config.upstream_model(name)
    keys = pool.keys_of(model.provider)
    if not keys:
        return f"provider {model.provider} has no keys configured"
    now = pool.now()
    counts: dict[str, int] = {}
    for record in await pool.records(model.provider):
        state = key_state(record, upstream, now)
        label = state.value
        if state is KeyState.COOLING and record.hold_for(upstream, now) is None:  # only its budget holds it
            label += " on their client-side budget"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) + f" of {len(keys)} keys"
