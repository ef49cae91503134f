"""Which keys of one (provider, model) are worth looking at, so a pick reads a few keys, not all.

Keys believed usable sit in `ready`, in the order the strategy prefers them: least recently
leased first (balanced), next in turn (round_robin), lowest index (priority). A key found held
is parked in a heap until its hold ends, and comes back — as the half-open probe — when it does.
A pick therefore costs a handful of steps whether the provider has ten keys or a hundred thousand.
The decisions themselves stay in `rules.py`; the index only chooses whom to ask.

The shared pool keeps the same index in Redis (`pool.lua`: a sorted set of ready keys per
(provider, model), one of parked keys scored by when they wake), so both pools look at the same
keys in the same order: keys parked until the same moment wake in key-id order, as a sorted set
orders them.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import OrderedDict
from collections.abc import Iterator

from .secret import ApiKey


class KeyIndex:
    def __init__(self, keys: list[ApiKey], strategy: str) -> None:
        self._by_id = {k.key_id: k for k in keys}
        self._priority = strategy == "priority"
        self._ready: OrderedDict[str, ApiKey] = OrderedDict((k.key_id, k) for k in keys)
        self._sorted: list[int] = sorted(k.index for k in keys) if self._priority else []
        self._by_index = {k.index: k for k in keys}
        self._parked: dict[str, float] = {}  # key id → until (inf: until an operator reset)
        self._heap: list[tuple[float, str]] = []

    def wake(self, now: float) -> None:
        """Bring back the parked keys whose time has come."""
        while self._heap and self._heap[0][0] <= now:
            until, key_id = heapq.heappop(self._heap)
            if self._parked.get(key_id) == until:
                self.unpark(key_id)

    def scan(self) -> Iterator[ApiKey]:
        """Ready keys in the order of preference. Finish with it before parking or leasing."""
        if self._priority:
            return (self._by_index[i] for i in self._sorted)
        return iter(self._ready.values())

    def leased(self, key_id: str) -> None:
        """A key was leased: the balanced and round-robin orders send it to the back."""
        if not self._priority and key_id in self._ready:
            self._ready.move_to_end(key_id)

    def park(self, key_id: str, until: float) -> None:
        """Leave `key_id` out of picks until `until` (inf: until `unpark`)."""
        key = self._ready.pop(key_id, None)
        if key is None:
            return
        if self._priority:
            position = bisect.bisect_left(self._sorted, key.index)
            del self._sorted[position]
        self._parked[key_id] = until
        if until != math.inf:
            heapq.heappush(self._heap, (until, key_id))

    def first_parked(self) -> float | None:
        """When the first parked key wakes (inf: every parked key waits for a reset; None: none parked)."""
        if not self._parked:
            return None
        while self._heap and self._parked.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale: unparked, or parked again since
        return self._heap[0][0] if self._heap else math.inf

    def unpark(self, key_id: str) -> None:
        """Make a parked key a candidate again (its hold ended, or an operator reset it)."""
        if self._parked.pop(key_id, None) is None:
            return
        key = self._by_id[key_id]
        self._ready[key_id] = key
        if self._priority:
            bisect.insort(self._sorted, key.index)
