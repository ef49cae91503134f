"""What every key pool is: the `KeyPool` protocol, the lease it hands out, and the shared base.

Two pools implement it with the same signatures and the same rules (`rules.py`): `LocalKeyPool`
(one process, state in memory, persisted by the store) and `RedisKeyPool` (several instances,
state in Redis). The router, metrics and the read-side views are typed against the protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..outcomes import Headroom, Verdict
from .rules import Fit, PoolSettings
from .secret import ApiKey
from .state import KeyRecord

if TYPE_CHECKING:
    from ..store.base import Store


@dataclass(frozen=True, slots=True)
class Lease:
    key: ApiKey
    model: str
    probe: bool = False
    ticket: str = ""  # the lease's id where leases are shared (Redis)
    cost: int = 0  # tokens charged to the key's budget in advance (estimate)


Pick = Lease | Fit  # a lease, or why there is none: Fit.BUSY (wait a moment) or Fit.HELD (move on)


class KeyPool(Protocol):
    """A rotating pool of keys: lease the best usable key, learn from what happened with it."""

    async def open(self, store: Store) -> None:
        """Adopt remembered state and make every configured key visible (to `status`)."""

    async def acquire(self, provider: str, model: str, exclude: Iterable[str] = (), cost: int = 0) -> Pick:
        """Lease the best usable key for (provider, model), or say why none can be leased now."""

    async def release(
        self, lease: Lease, verdict: Verdict, headroom: Headroom | None = None, used_tokens: int | None = None
    ) -> None:
        """Return the lease and record what the attempt taught us about the key."""

    async def cancel(self, lease: Lease) -> None:
        """Give a lease back unused (the call was cancelled before an answer)."""

    async def reset(self, key_id: str) -> bool:
        """Operator reset: forget every hold on the key; False for an unknown key."""

    async def reconfigure(self, keys: dict[str, list[ApiKey]], settings: dict[str, PoolSettings]) -> None:
        """A reloaded config's keys: those still configured keep their state, new ones start ready,
        removed ones go (a lease still out on one is given back harmlessly)."""

    async def records(self, provider: str | None = None) -> list[KeyRecord]:
        """The records of the configured keys (of one provider), in configuration order."""

    async def ready_in(self, provider: str, model: str) -> float | None:
        """Seconds until some key can serve (provider, model): 0 now, None if none ever will."""

    def take_dirty(self, state_changes_only: bool = False) -> list[KeyRecord]:
        """Records the store must still write (none where the pool writes its own state)."""

    def providers(self) -> list[str]: ...

    def keys_of(self, provider: str) -> list[ApiKey]: ...

    def settings(self, provider: str) -> PoolSettings: ...

    def now(self) -> float: ...


class PoolBase:
    """What every pool knows without asking anyone: the configured keys, settings and the clock."""

    def __init__(
        self,
        keys: dict[str, list[ApiKey]],
        settings: dict[str, PoolSettings] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._settings = settings or {}
        self._clock = clock

    def providers(self) -> list[str]:
        return list(self._keys)

    def keys_of(self, provider: str) -> list[ApiKey]:
        return self._keys.get(provider, [])

    def now(self) -> float:
        return self._clock()

    def settings(self, provider: str) -> PoolSettings:
        return self._settings.get(provider) or PoolSettings()

    @staticmethod
    def fresh(key: ApiKey) -> KeyRecord:
        """A key's record before anything happened to it, carrying its configured budget."""
        return KeyRecord(key.key_id, key.provider, key.mask, budget=key.budget)
