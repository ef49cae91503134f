"""Key states and the durable record of one key (what the store saves and `key_status` shows)."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from ..text import one_line
from .budget import NO_BUDGET, Budget

_BUDGET_FIELDS = ("rpm", "tpm", "rpd", "tpd")  # a newer version's fields are ignored, not a crash


class KeyState(enum.StrEnum):
    READY = "ready"
    COOLING = "cooling"
    EXHAUSTED = "exhausted"
    DISABLED = "disabled"


@dataclass(slots=True)
class Hold:
    """Why a key (or one model on it) is not usable, and until when (None: until reset)."""

    state: KeyState
    until: float | None
    reason: str
    status_code: int | None = None
    since: float = 0.0
    strikes: int = 1

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hold:
        # A reason stored before reasons were cleaned could hold a lone surrogate, which no view can encode.
        return cls(**{**data, "state": KeyState(data["state"]), "reason": one_line(str(data.get("reason", "")))})


@dataclass(slots=True)
class Window:
    """What the provider's rate-limit headers last said about (key, model)."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None
    silent: bool = False  # the provider sends no such headers: nothing to learn, nothing to throttle

    def remaining_at(self, now: float) -> int | None:
        """Requests left now: the last report, or the full limit once the window has reset."""
        if self.reset_at is not None and now >= self.reset_at:
            return self.limit
        return self.remaining

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        return cls(**data)


@dataclass(slots=True)
class KeyRecord:
    """Everything remembered about one key. Holds the id and mask, never the secret."""

    key_id: str
    provider: str
    mask: str
    hold: Hold | None = None  # key-wide: quota, auth, or a whole-key rate limit
    model_holds: dict[str, Hold] = field(default_factory=dict)  # rate limits are per (key, model)
    windows: dict[str, Window] = field(default_factory=dict)  # headroom per model, from headers
    requests: int = 0
    failures: int = 0
    last_status: int | None = None
    last_used: float | None = None
    spend: dict[str, list[list[float]]] = field(default_factory=dict)  # client-side budget buckets
    budget: Budget = NO_BUDGET  # the key's client-side budget as configured (the pool sets it from the key)

    def hold_for(self, model: str, now: float) -> Hold | None:
        """The hold that applies to `model` now, key-wide first."""
        if self.hold is not None and self.hold.active(now):
            return self.hold
        held = self.model_holds.get(model)
        return held if held is not None and held.active(now) else None

    def expired_hold_for(self, model: str, now: float) -> Hold | None:
        """A hold whose time has passed but which no request has tested yet (half-open)."""
        for held in (self.hold, self.model_holds.get(model)):
            if held is not None and not held.active(now):
                return held
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "provider": self.provider,
            "mask": self.mask,
            "hold": self.hold.to_dict() if self.hold else None,
            "model_holds": {m: h.to_dict() for m, h in self.model_holds.items()},
            "windows": {m: w.to_dict() for m, w in self.windows.items()},
            "requests": self.requests,
            "failures": self.failures,
            "last_status": self.last_status,
            "last_used": self.last_used,
            "spend": self.spend,
            "budget": {k: v for k, v in asdict(self.budget).items() if v is not None},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRecord:
        return cls(
            key_id=data["key_id"],
            provider=data["provider"],
            mask=data["mask"],
            hold=Hold.from_dict(data["hold"]) if data.get("hold") else None,
            model_holds={m: Hold.from_dict(h) for m, h in (data.get("model_holds") or {}).items()},
            windows={m: Window.from_dict(w) for m, w in (data.get("windows") or {}).items()},
            requests=data.get("requests", 0),
            failures=data.get("failures", 0),
            last_status=data.get("last_status"),
            last_used=data.get("last_used"),
            spend=data.get("spend") or {},
            budget=Budget(**{k: v for k, v in (data.get("budget") or {}).items() if k in _BUDGET_FIELDS}),
        )
