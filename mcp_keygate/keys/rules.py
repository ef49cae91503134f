"""The rules of the pool, as pure functions over key records — shared by the local and Redis pools,
so both decide exactly alike.

- A key is never leased for a model while a hold applies (cooling, exhausted, disabled).
- When a hold's time has passed, exactly one request probes the key (half-open).
- Headroom from the provider's headers steers before the 429: no more requests in flight than
  the window has left, a key that reports 0 left cools until the reset, and a key whose headroom
  is unknown gets one request at a time until its first answer tells.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..outcomes import LONG_WAIT_S, Headroom, Outcome, Verdict
from .budget import charge, wait_for_budget
from .state import Hold, KeyRecord, KeyState, Window


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Per-provider rotation knobs (from `ProviderConfig`). A key's client-side budget is not here:
    it travels with the key (`ApiKey.budget`, copied into its `KeyRecord`)."""

    strategy: str = "balanced"
    cooldown_s: float = 60.0
    max_cooldown_s: float = 3600.0
    quota_cooldown_s: float = 6 * 3600.0


class Fit(enum.Enum):
    USABLE = "usable"
    PROBE = "probe"  # usable, as the single half-open probe
    BUSY = "busy"  # usable again when a request in flight returns
    HELD = "held"  # unusable until a known time (or a reset)


def fit_for(record: KeyRecord, model: str, now: float, in_flight: int, probing: bool, cost: int = 0) -> Fit:
    """Can `record`'s key take one more request for `model` (of about `cost` tokens) now?"""
    if record.hold_for(model, now) is not None:
        return Fit.HELD
    if record.budget and wait_for_budget(record.spend, record.budget, now, cost)[0] > 0:
        return Fit.HELD
    if record.expired_hold_for(model, now) is not None:
        return Fit.BUSY if probing or in_flight else Fit.PROBE
    window = record.windows.get(model)
    if window is None:
        return Fit.BUSY if in_flight else Fit.USABLE  # learn the headroom before sending more
    if window.silent:
        return Fit.USABLE
    remaining = window.remaining_at(now)
    if remaining is None:
        return Fit.BUSY if in_flight else Fit.USABLE
    return Fit.USABLE if in_flight < remaining else Fit.BUSY


def budget_hold(record: KeyRecord, now: float) -> Hold | None:
    """The key's budget, shown as the hold it acts like: cooling until the window has room again."""
    if not record.budget:
        return None
    wait, why = wait_for_budget(record.spend, record.budget, now)
    if wait <= 0:
        return None
    return Hold(KeyState.COOLING, None if wait == math.inf else now + wait, why, None, now)


def state_for(record: KeyRecord, model: str | None, now: float) -> Hold | None:
    """What stops the key serving `model` (None: key-wide holds only) now, its budget included."""
    held = record.hold_for(model, now) if model is not None else None
    if held is None and record.hold is not None and record.hold.active(now):
        held = record.hold
    return held or budget_hold(record, now)


def key_state(record: KeyRecord, model: str | None, now: float) -> KeyState:
    """The one answer to "what state is this key in?" that every view asks (key_status, /metrics,
    list_models, a failed call's summary).

    For a model: the hold that stops the key serving it (budget included), else ready. For the key
    as a whole (`model` None): its key-wide hold or spent budget, else cooling when it is cooling for
    any model, else ready.
    """
    held = state_for(record, model, now)
    if held is not None:
        return held.state
    if model is None and any(h.active(now) for h in record.model_holds.values()):
        return KeyState.COOLING
    return KeyState.READY


def wait_for(record: KeyRecord, model: str, now: float, cost: int = 0) -> float:
    """Seconds until `record` can serve `model` again: 0 now, inf when only a reset helps."""
    wait = wait_for_budget(record.spend, record.budget, now, cost)[0] if record.budget else 0.0
    for held in (record.hold, record.model_holds.get(model)):
        if held is not None and held.active(now):
            wait = max(wait, math.inf if held.until is None else held.until - now)
    return wait


@dataclass(frozen=True, slots=True)
class Candidate:
    key_id: str
    index: int
    in_flight: int
    last_used: float
    fit: Fit
    nearly_out: bool = False  # under NEARLY_OUT of its window left: other keys first, until the reset


# A key with less than this share of its rate-limit window left is used only when others are not.
NEARLY_OUT = 0.1


def nearly_out(record: KeyRecord, model: str, now: float) -> bool:
    """Whether the provider's headers say this key is almost out of requests for `model` in this window."""
    window = record.windows.get(model)
    if window is None or window.silent or not window.limit:
        return False
    remaining = window.remaining_at(now)
    return remaining is not None and remaining < NEARLY_OUT * window.limit


def rate(
    key_id: str,
    index: int,
    record: KeyRecord,
    model: str,
    now: float,
    in_flight: int,
    probing: bool,
    cost: int = 0,
) -> Candidate:
    """How one key stands for one more request to `model`."""
    fit = fit_for(record, model, now, in_flight, probing, cost)
    return Candidate(key_id, index, in_flight, record.last_used or 0.0, fit, nearly_out(record, model, now))


def candidates_for(
    keys: Sequence[tuple[str, int]],
    records: Sequence[KeyRecord],
    model: str,
    now: float,
    in_flight: dict[str, int],
    probing: set[str],
    skip: set[str],
    cost: int = 0,
) -> list[Candidate]:
    """How each key (id, index) stands for one more request to `model`."""
    candidates = []
    for (key_id, index), record in zip(keys, records, strict=True):
        if key_id in skip:
            continue
        count = in_flight.get(key_id, 0)
        candidates.append(rate(key_id, index, record, model, now, count, key_id in probing, cost))
    return candidates


def no_lease(candidates: Sequence[Candidate]) -> Fit:
    """Why nothing was leased: a busy key is worth a short wait, held keys are not."""
    return Fit.BUSY if any(c.fit is Fit.BUSY for c in candidates) else Fit.HELD


def earliest_ready(records: Sequence[KeyRecord], model: str, now: float) -> float | None:
    """Seconds until some key can serve `model`: 0 now, None if none will without an operator."""
    best = min((wait_for(r, model, now) for r in records), default=math.inf)
    return None if best == math.inf else best


def choose(strategy: str, candidates: Sequence[Candidate], cursor: int, count: int) -> Candidate | None:
    """The key to lease among usable candidates, per the provider's strategy."""
    usable = [c for c in candidates if c.fit in (Fit.USABLE, Fit.PROBE)]
    if not usable:
        return None
    if strategy == "priority":
        return min(usable, key=lambda c: c.index)
    if strategy == "round_robin":
        return min(usable, key=lambda c: (c.index - cursor) % count)
    # balanced: keys with headroom before nearly-out ones, then fewest requests in flight, then least
    # recently used.
    return min(usable, key=lambda c: (c.nearly_out, c.in_flight, c.last_used, c.index))


def charge_lease(record: KeyRecord, now: float, cost: int) -> None:
    """Count a leased request against its key's budget before it is sent (concurrent calls cannot overspend)."""
    if record.budget:
        charge(record.spend, record.budget, now, 1, cost)


def settle_tokens(record: KeyRecord, now: float, cost: int, used: int | None) -> None:
    """Replace a lease's token estimate with what the answer really used."""
    budget = record.budget
    if (budget.tpm is not None or budget.tpd is not None) and used is not None and used != cost:
        charge(record.spend, budget, now, 0, used - cost)


def apply_verdict(
    record: KeyRecord,
    model: str,
    verdict: Verdict,
    headroom: Headroom | None,
    settings: PoolSettings,
    now: float,
    probe: bool,
) -> None:
    """Record what one attempt taught us: counters, headroom, and the hold it earned (if any)."""
    record.requests += 1
    record.last_used = now
    record.last_status = verdict.status_code
    outcome = verdict.outcome
    if outcome is not Outcome.TIMEOUT and verdict.status_code is not None:
        _learn_headroom(record, model, headroom, now)
    if outcome is Outcome.OK:
        _clear_expired(record, model, now)
        window = record.windows.get(model)
        if window is not None and window.remaining == 0 and window.reset_at is not None and window.reset_at > now:
            reason = "no requests left in this rate-limit window (from the provider's headers)"
            record.model_holds[model] = Hold(KeyState.COOLING, window.reset_at, reason, verdict.status_code, now)
        return
    record.failures += 1
    if outcome is Outcome.RATE_LIMITED:
        previous = record.expired_hold_for(model, now) if probe else None
        strikes = previous.strikes + 1 if previous else 1
        wait = verdict.retry_after_s
        if wait is None or wait <= 0:
            wait = settings.cooldown_s * (2 ** (strikes - 1))
        if wait >= LONG_WAIT_S and not verdict.model_only:
            record.hold = Hold(KeyState.EXHAUSTED, now + wait, verdict.reason, verdict.status_code, now)
            return
        if not verdict.model_only:
            wait = min(wait, settings.max_cooldown_s)
        record.model_holds[model] = Hold(
            KeyState.COOLING, now + wait, verdict.reason, verdict.status_code, now, strikes
        )
    elif outcome is Outcome.QUOTA_EXHAUSTED:
        wait = verdict.retry_after_s if verdict.retry_after_s else settings.quota_cooldown_s
        record.hold = Hold(KeyState.EXHAUSTED, now + wait, verdict.reason, verdict.status_code, now)
    elif outcome is Outcome.AUTH_FAILED:
        record.hold = Hold(KeyState.DISABLED, None, verdict.reason, verdict.status_code, now)
    # Overload, 5xx, timeouts, unknown models and request errors say nothing about the key: it stays ready.


def _learn_headroom(record: KeyRecord, model: str, headroom: Headroom | None, now: float) -> None:
    if headroom is None or headroom.remaining_requests is None:
        if model not in record.windows:
            record.windows[model] = Window(silent=True)
        return
    reset_at = now + headroom.reset_requests_s if headroom.reset_requests_s is not None else None
    old = record.windows.get(model)
    remaining = headroom.remaining_requests
    same_window = (
        old is not None
        and not old.silent
        and old.reset_at is not None
        and reset_at is not None
        and now < old.reset_at
        and reset_at <= old.reset_at + 1.0
    )
    if same_window and old is not None and old.remaining is not None:
        remaining = min(remaining, old.remaining)  # answers can arrive out of order; a window only drains
        reset_at = old.reset_at
    record.windows[model] = Window(headroom.limit_requests, remaining, reset_at)


def _clear_expired(record: KeyRecord, model: str, now: float) -> None:
    if record.hold is not None and not record.hold.active(now):
        record.hold = None
    held = record.model_holds.get(model)
    if held is not None and not held.active(now):
        del record.model_holds[model]
    for other, held in list(record.model_holds.items()):
        if not held.active(now) and held.until is not None and now - held.until > 3600:
            del record.model_holds[other]


def reset_record(record: KeyRecord) -> None:
    """Operator reset: forget every hold and what the headers said."""
    record.hold = None
    record.model_holds.clear()
    record.windows.clear()
