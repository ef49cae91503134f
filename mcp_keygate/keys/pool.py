"""The rotating key pool: pick a usable key, lease it, and learn from what happened.

Invariant: a key is never leased for a model while a hold applies to it. When a hold's time has
passed, exactly one request may probe the key (half-open); the others keep avoiding it until
that probe succeeds. All methods are synchronous and run on the event loop, so a pick and its
lease are one atomic step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..outcomes import LONG_WAIT_S, Outcome, Verdict
from .secret import ApiKey
from .state import Hold, KeyRecord, KeyState


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """Per-provider knobs (from `ProviderConfig`)."""

    strategy: str = "balanced"
    cooldown_s: float = 60.0
    max_cooldown_s: float = 3600.0
    quota_cooldown_s: float = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Lease:
    key: ApiKey
    model: str
    probe: bool = False


class KeyPool:
    def __init__(
        self,
        keys: dict[str, list[ApiKey]],
        policies: dict[str, PoolPolicy] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._policies = policies or {}
        self._clock = clock
        self._records: dict[str, KeyRecord] = {
            k.key_id: KeyRecord(k.key_id, k.provider, k.mask) for ks in keys.values() for k in ks
        }
        self._in_flight: dict[str, int] = {}
        self._probing: set[tuple[str, str]] = set()
        self._cursor: dict[str, int] = {}
        self._dirty: set[str] = set()

    # -- state in and out -------------------------------------------------------------------

    def load(self, records: Iterable[KeyRecord]) -> None:
        """Adopt remembered state for the keys still configured; forget the rest."""
        for record in records:
            current = self._records.get(record.key_id)
            if current is not None and current.provider == record.provider:
                record.mask = current.mask
                self._records[record.key_id] = record

    def records(self, provider: str | None = None) -> list[KeyRecord]:
        return [
            self._records[k.key_id]
            for name, ks in self._keys.items()
            if provider is None or name == provider
            for k in ks
        ]

    def take_dirty(self) -> list[KeyRecord]:
        """Records changed since the last call, for the store to persist."""
        dirty = [self._records[k] for k in self._dirty]
        self._dirty.clear()
        return dirty

    def providers(self) -> list[str]:
        return list(self._keys)

    def keys_of(self, provider: str) -> list[ApiKey]:
        return self._keys.get(provider, [])

    def now(self) -> float:
        return self._clock()

    # -- choosing ---------------------------------------------------------------------------

    def acquire(self, provider: str, model: str, exclude: Iterable[str] = ()) -> Lease | None:
        """Lease the best usable key for (provider, model), or None when none is usable now."""
        keys = self._keys.get(provider) or []
        if not keys:
            return None
        now = self._clock()
        skip = set(exclude)
        usable: list[tuple[ApiKey, bool]] = []
        for key in keys:
            if key.key_id in skip:
                continue
            record = self._records[key.key_id]
            if record.hold_for(model, now) is not None:
                continue
            probe = record.expired_hold_for(model, now) is not None
            if probe and (key.key_id, model) in self._probing:
                continue
            usable.append((key, probe))
        if not usable:
            return None
        key, probe = self._choose(provider, usable)
        self._in_flight[key.key_id] = self._in_flight.get(key.key_id, 0) + 1
        if probe:
            self._probing.add((key.key_id, model))
        return Lease(key, model, probe)

    def _choose(self, provider: str, usable: list[tuple[ApiKey, bool]]) -> tuple[ApiKey, bool]:
        strategy = self._policy(provider).strategy
        if strategy == "priority":
            return min(usable, key=lambda kp: kp[0].index)
        if strategy == "round_robin":
            count = len(self._keys[provider])
            start = self._cursor.get(provider, 0)
            chosen = min(usable, key=lambda kp: (kp[0].index - start) % count)
            self._cursor[provider] = (chosen[0].index + 1) % count
            return chosen
        # balanced: fewest requests in flight, then least recently used.
        return min(
            usable,
            key=lambda kp: (
                self._in_flight.get(kp[0].key_id, 0),
                self._records[kp[0].key_id].last_used or 0.0,
                kp[0].index,
            ),
        )

    def ready_in(self, provider: str, model: str) -> float | None:
        """Seconds until some key can serve (provider, model): 0 now, None if none ever will."""
        now = self._clock()
        best: float | None = None
        for key in self._keys.get(provider) or []:
            record = self._records[key.key_id]
            wait = 0.0
            for held in (record.hold, record.model_holds.get(model)):
                if held is not None and held.active(now):
                    wait = float("inf") if held.until is None else max(wait, held.until - now)
            if wait == float("inf"):
                continue
            best = wait if best is None else min(best, wait)
        return best

    # -- learning ---------------------------------------------------------------------------

    def release(self, lease: Lease, verdict: Verdict) -> None:
        """Return the lease and record what the attempt taught us about the key."""
        key_id = lease.key.key_id
        self._in_flight[key_id] = max(0, self._in_flight.get(key_id, 1) - 1)
        self._probing.discard((key_id, lease.model))
        record = self._records[key_id]
        now = self._clock()
        policy = self._policy(lease.key.provider)
        record.requests += 1
        record.last_used = now
        record.last_status = verdict.status_code
        self._dirty.add(key_id)
        outcome = verdict.outcome
        if outcome is Outcome.OK:
            self._clear_expired(record, lease.model, now)
            return
        record.failures += 1
        if outcome is Outcome.RATE_LIMITED:
            previous = record.expired_hold_for(lease.model, now) if lease.probe else None
            strikes = previous.strikes + 1 if previous else 1
            wait = verdict.retry_after_s
            if wait is None or wait <= 0:
                wait = policy.cooldown_s * (2 ** (strikes - 1))
            if wait >= LONG_WAIT_S:
                record.hold = Hold(KeyState.EXHAUSTED, now + wait, verdict.reason, verdict.status_code, now)
                return
            wait = min(wait, policy.max_cooldown_s)
            record.model_holds[lease.model] = Hold(
                KeyState.COOLING, now + wait, verdict.reason, verdict.status_code, now, strikes
            )
        elif outcome is Outcome.QUOTA_EXHAUSTED:
            wait = verdict.retry_after_s if verdict.retry_after_s else policy.quota_cooldown_s
            record.hold = Hold(KeyState.EXHAUSTED, now + wait, verdict.reason, verdict.status_code, now)
        elif outcome is Outcome.AUTH_FAILED:
            record.hold = Hold(KeyState.DISABLED, None, verdict.reason, verdict.status_code, now)
        # Overload, 5xx, timeouts and request errors say nothing about the key: it stays ready.

    def cancel(self, lease: Lease) -> None:
        """Give a lease back unused (the call was cancelled before an answer)."""
        self._in_flight[lease.key.key_id] = max(0, self._in_flight.get(lease.key.key_id, 1) - 1)
        self._probing.discard((lease.key.key_id, lease.model))

    def reset(self, key_id: str) -> bool:
        """Operator reset: forget every hold on the key."""
        record = self._records.get(key_id)
        if record is None:
            return False
        record.hold = None
        record.model_holds.clear()
        self._dirty.add(key_id)
        return True

    def _clear_expired(self, record: KeyRecord, model: str, now: float) -> None:
        if record.hold is not None and not record.hold.active(now):
            record.hold = None
        held = record.model_holds.get(model)
        if held is not None and not held.active(now):
            del record.model_holds[model]
        for other, held in list(record.model_holds.items()):
            if not held.active(now) and held.until is not None and now - held.until > 3600:
                del record.model_holds[other]

    def _policy(self, provider: str) -> PoolPolicy:
        return self._policies.get(provider) or PoolPolicy()
