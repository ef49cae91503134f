"""Keys: their identities, states and the rotating pool."""

from .base import KeyPool, Lease
from .pool import LocalKeyPool
from .rules import Fit, PoolSettings
from .secret import ApiKey, key_id_for, mask_for, scrub
from .state import Hold, KeyRecord, KeyState

__all__ = [
    "ApiKey",
    "Fit",
    "Hold",
    "KeyPool",
    "KeyRecord",
    "KeyState",
    "Lease",
    "LocalKeyPool",
    "PoolSettings",
    "key_id_for",
    "mask_for",
    "scrub",
]
