"""Where the shared pool keeps things in Redis, and how a provider's keys get there.

Every name of one provider carries its hash tag, `P:{provider}:…`, so a script call touches one
Redis Cluster slot. Names hold key ids (a hash of the secret) and model names, never a secret.

`P:{p}:key:<key_id>` a key's record (JSON, what `status` shows); `P:{p}:keys` the key ids by
configuration index; `P:{p}:ready:<model>` / `P:{p}:parked:<model>` the index of one model (see
`pool.lua`); `P:{p}:leases`, `:tickets`, `:inflight`, `:probing` live leases; `:cursor` and `:seq`
the round-robin cursor and the index's positions; `:layout` what the key list was built from.
`P:keys` (no tag) lists every key id, for `status` and the store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .secret import ApiKey
from .state import KeyRecord

CHUNK = 2_000  # keys per script call when the key list is (re)written


def provider_base(prefix: str, provider: str) -> str:
    return f"{prefix}:{{{provider}}}"


def record_name(prefix: str, key_id: str, provider: str | None = None) -> str:
    """A key's record; the provider is the key id's head (`provider:hex`) unless given."""
    return f"{provider_base(prefix, provider or key_id.rsplit(':', 1)[0])}:key:{key_id}"


@dataclass(frozen=True, slots=True)
class ProviderNames:
    prefix: str
    provider: str

    @property
    def base(self) -> str:
        return provider_base(self.prefix, self.provider)

    def fixed(self) -> list[str]:
        """KEYS 1–8 of every script call."""
        b = self.base
        return [f"{b}:{n}" for n in ("keys", "models", "leases", "tickets", "inflight", "probing", "cursor", "seq")]

    def for_model(self, model: str) -> list[str]:
        """KEYS of a call about one model: the fixed ones and the model's index."""
        return [*self.fixed(), f"{self.base}:ready:{model}", f"{self.base}:parked:{model}"]

    def record(self, key_id: str) -> str:
        return f"{self.base}:key:{key_id}"

    @property
    def layout(self) -> str:
        return f"{self.base}:layout"


def layout_of(keys: list[ApiKey], strategy: str) -> str:
    """A digest of what the index is built from: the keys in order, their budgets, the strategy."""
    text = strategy + "".join(f"\n{k.key_id} {k.budget}" for k in keys)
    return hashlib.sha256(text.encode()).hexdigest()


def fresh_json(key: ApiKey, old: bytes | str | None = None) -> str:
    """A key's first record in this layout: its record from the layout before the hash tags when
    there is one (so an upgrade keeps cooldowns and disabled keys), else a fresh one."""
    record = KeyRecord(key.key_id, key.provider, key.mask, budget=key.budget)
    if old:
        record = KeyRecord.from_dict(json.loads(old))
        record.mask, record.budget = key.mask, key.budget
    return json.dumps(record.to_dict())
