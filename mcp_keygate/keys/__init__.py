"""Keys: their identities, states and the rotating pool."""

from .pool import KeyPool, Lease
from .rules import Fit, PoolPolicy
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
    "PoolPolicy",
    "key_id_for",
    "mask_for",
    "scrub",
]
