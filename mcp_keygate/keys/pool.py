"""The rotating key pool of one process: pick a usable key, lease it, learn from what happened.

State lives in memory and is persisted by the store from `take_dirty()`: a change of state (a
cooldown, a parked or disabled key) at once, mere counters (requests, headroom, budget spend) in
batches. Every method runs on the event loop without awaiting anything, so a pick and its lease
are one atomic step. The rules themselves are in `rules.py`, shared with the Redis pool.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..outcomes import Headroom, Verdict
from .base import Lease, Pick, PoolBase
from .index import KeyIndex
from .rules import (
    Candidate,
    Fit,
    PoolSettings,
    apply_verdict,
    charge_lease,
    choose,
    no_lease,
    rate,
    reset_record,
    settle_tokens,
    wait_for,
)
from .secret import ApiKey
from .state import KeyRecord

if TYPE_CHECKING:
    from ..store.base import Store


# A pick weighs this many usable keys from the front of the index (all of them in a small pool),
# and looks at no more than MAX_SCAN keys (busy or held ones included): cut short, it says BUSY
# (look again in a moment), and the held keys it met are parked by then.
USABLE_PER_PICK = 8
MAX_SCAN = 1000


class LocalKeyPool(PoolBase):
    """The `KeyPool` of a single process."""

    def __init__(
        self,
        keys: dict[str, list[ApiKey]],
        settings: dict[str, PoolSettings] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(keys, settings, clock)
        self._records: dict[str, KeyRecord] = {k.key_id: self.fresh(k) for ks in keys.values() for k in ks}
        self._in_flight: dict[tuple[str, str], int] = {}
        self._probing: set[tuple[str, str]] = set()
        self._cursor: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._urgent: set[str] = set()  # dirty records whose state changed: written with the next call
        self._indexes: dict[tuple[str, str], KeyIndex] = {}

    # -- state in and out -------------------------------------------------------------------

    async def open(self, store: Store) -> None:
        """Adopt the state remembered in `store`, and list every configured key there (for `status`)."""
        self.load(await store.load_keys())
        await store.save_keys(self.snapshot())
        self._dirty.clear()

    def load(self, records: Iterable[KeyRecord]) -> None:
        """Adopt remembered state for the keys still configured; forget the rest."""
        for record in records:
            current = self._records.get(record.key_id)
            if current is not None and current.provider == record.provider:
                record.mask, record.budget = current.mask, current.budget  # the config's, not the file's
                self._records[record.key_id] = record

    async def records(self, provider: str | None = None) -> list[KeyRecord]:
        return self.snapshot(provider)

    def snapshot(self, provider: str | None = None) -> list[KeyRecord]:
        return [
            self._records[k.key_id]
            for name, ks in self._keys.items()
            if provider is None or name == provider
            for k in ks
        ]

    def take_dirty(self, state_changes_only: bool = False) -> list[KeyRecord]:
        """Records changed since they were last taken, for the store to persist — all of them, or only
        those whose state changed (counters can wait for the next batch; a cooldown cannot)."""
        taken = set(self._urgent if state_changes_only else self._dirty)
        self._dirty -= taken
        self._urgent -= taken
        return [self._records[k] for k in taken]

    # -- choosing ---------------------------------------------------------------------------

    async def acquire(self, provider: str, model: str, exclude: Iterable[str] = (), cost: int = 0) -> Pick:
        """Lease the best usable key for (provider, model), or say why none can be leased now.

        `cost` is the request's estimated tokens, charged to the key's budget if it has one. The
        shared pool's script (`pool.lua`) makes exactly these steps, in this order.
        """
        keys = self._keys.get(provider) or []
        if not keys:
            return Fit.HELD
        now = self._clock()
        strategy = self.settings(provider).strategy
        index = self._index(provider, model, strategy)
        index.wake(now)
        skip = set(exclude)
        candidates: list[Candidate] = []
        held: list[str] = []
        usable = 0
        cut = True
        for seen, key in enumerate(index.scan(), 1):
            if key.key_id not in skip:
                slot = (key.key_id, model)
                record = self._records[key.key_id]
                rated = rate(
                    key.key_id, key.index, record, model, now, self._in_flight.get(slot, 0), slot in self._probing, cost
                )
                if rated.fit is Fit.HELD:
                    held.append(key.key_id)
                else:
                    candidates.append(rated)
                    usable += rated.fit is not Fit.BUSY
                    if usable >= USABLE_PER_PICK:
                        cut = False
                        break
            if seen >= MAX_SCAN:
                break
        else:
            cut = False
        for key_id in held:
            wait = wait_for(self._records[key_id], model, now)
            if wait > 0:  # else only this request is too big for the key's budget: keep it for smaller ones
                index.park(key_id, now + wait)
        chosen = choose(strategy, candidates, self._cursor.get(provider, 0), len(keys))
        if chosen is None:
            return Fit.BUSY if cut else no_lease(candidates)
        return self._lease(keys[chosen.index], chosen, index, model, now, cost)

    def _lease(self, key: ApiKey, chosen: Candidate, index: KeyIndex, model: str, now: float, cost: int) -> Lease:
        index.leased(key.key_id)
        self._cursor[key.provider] = (chosen.index + 1) % len(self._keys[key.provider])
        self._in_flight[(key.key_id, model)] = chosen.in_flight + 1
        probe = chosen.fit is Fit.PROBE
        if probe:
            self._probing.add((key.key_id, model))
        record = self._records[key.key_id]
        if record.budget:
            charge_lease(record, now, cost)
            self._dirty.add(key.key_id)
        return Lease(key, model, probe, cost=cost)

    def _index(self, provider: str, model: str, strategy: str) -> KeyIndex:
        index = self._indexes.get((provider, model))
        if index is None:
            index = self._indexes[(provider, model)] = KeyIndex(self._keys[provider], strategy)
        return index

    async def ready_in(self, provider: str, model: str) -> float | None:
        """Seconds until some key can serve (provider, model): 0 now, None if none ever will.

        Asked of the index, like a pick (held keys found on the way are parked), so a failed call
        costs a handful of steps at any pool size; `rules.earliest_ready` is the same answer read
        from every record.
        """
        keys = self._keys.get(provider) or []
        if not keys:
            return None
        now = self._clock()
        index = self._index(provider, model, self.settings(provider).strategy)
        index.wake(now)
        held: list[tuple[str, float]] = []
        found = False
        for seen, key in enumerate(index.scan(), 1):
            wait = wait_for(self._records[key.key_id], model, now)
            if wait == 0:
                found = True
                break
            held.append((key.key_id, wait))
            if seen >= MAX_SCAN:
                found = True  # cut short: say "now" and let the pick find out
                break
        for key_id, wait in held:
            index.park(key_id, now + wait)
        if found:
            return 0.0
        first = index.first_parked()
        return None if first is None or first == math.inf else first - now

    # -- learning ---------------------------------------------------------------------------

    async def release(
        self, lease: Lease, verdict: Verdict, headroom: Headroom | None = None, used_tokens: int | None = None
    ) -> None:
        """Return the lease and record what the attempt taught us about the key."""
        self._end_lease(lease)
        record = self._records.get(lease.key.key_id)
        if record is None:
            return  # the key was removed by a reload while this attempt ran
        now = self._clock()
        before = _state_of(record)
        apply_verdict(record, lease.model, verdict, headroom, self.settings(lease.key.provider), now, lease.probe)
        settle_tokens(record, now, lease.cost, used_tokens)
        self._dirty.add(record.key_id)
        if _state_of(record) != before:
            self._urgent.add(record.key_id)

    async def cancel(self, lease: Lease) -> None:
        """Give a lease back unused (the call was cancelled before an answer)."""
        self._end_lease(lease)

    def _end_lease(self, lease: Lease) -> None:
        slot = (lease.key.key_id, lease.model)
        self._in_flight[slot] = max(0, self._in_flight.get(slot, 1) - 1)
        self._probing.discard(slot)

    async def reset(self, key_id: str) -> bool:
        """Operator reset: forget every hold on the key."""
        record = self._records.get(key_id)
        if record is None:
            return False
        reset_record(record)
        for (provider, _), index in self._indexes.items():
            if provider == record.provider:
                index.unpark(key_id)
        self._dirty.add(key_id)
        self._urgent.add(key_id)
        return True

    async def reconfigure(self, keys: dict[str, list[ApiKey]], settings: dict[str, PoolSettings]) -> None:
        """A reloaded config's keys: those still configured keep their state, new ones start ready,
        removed ones go. The indexes are rebuilt on the next pick from the records."""
        records: dict[str, KeyRecord] = {}
        for key in (k for ks in keys.values() for k in ks):
            record = self._records.get(key.key_id)
            if record is None or record.provider != key.provider:
                record = self.fresh(key)
                self._dirty.add(key.key_id)
            record.mask, record.budget = key.mask, key.budget
            records[key.key_id] = record
        self._records, self._keys, self._settings = records, keys, settings
        self._dirty &= set(records)
        self._urgent &= set(records)
        self._indexes.clear()
        self._cursor = {name: self._cursor.get(name, 0) % len(ks) for name, ks in keys.items() if ks}


def _state_of(record: KeyRecord) -> tuple[object, ...]:
    """What `key_status` reports apart from counters: the holds (compared by value)."""
    return (record.hold, dict(record.model_holds))
