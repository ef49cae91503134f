"""What an upstream answer means for the key, the model and the request.

Providers turn HTTP replies into a `Verdict`; the pool and the router act on it. Retry-after
parsing lives here because every provider reports waits in the same handful of shapes.
"""

from __future__ import annotations

import email.utils
import enum
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    AUTH_FAILED = "auth_failed"
    OVERLOADED = "overloaded"
    CONTEXT_TOO_LONG = "context_too_long"
    MODEL_NOT_FOUND = "model_not_found"  # the provider has no such model (or deployment) for this key: next model
    BAD_REQUEST = "bad_request"
    UPSTREAM_ERROR = "upstream_error"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # no connection at all: refused, unknown host, TLS failure
    INVALID_OUTPUT = "invalid_output"  # a structured answer that is not JSON or does not fit the schema
    UNSUPPORTED_INPUT = "unsupported_input"  # the model cannot take the call's images or PDFs: not sent

    @property
    def blames_key(self) -> bool:
        """Whether another key of the same model may succeed where this one failed."""
        return self in (Outcome.RATE_LIMITED, Outcome.QUOTA_EXHAUSTED, Outcome.AUTH_FAILED)

    @property
    def is_transient_upstream(self) -> bool:
        """Failures about the model or provider, not the key: one retry elsewhere, then move on."""
        return self in (Outcome.OVERLOADED, Outcome.UPSTREAM_ERROR, Outcome.TIMEOUT)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classified result of one attempt."""

    outcome: Outcome
    status_code: int | None = None
    retry_after_s: float | None = None
    reason: str = ""
    # A rate limit that concerns this model only, however long (Gemini's "limit: 0" free tier):
    # the key stays usable for its other models instead of being parked whole.
    model_only: bool = False


@dataclass(frozen=True, slots=True)
class Headroom:
    """What a reply's rate-limit headers say is left on the key for this model (None: not said)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


# A rate-limit wait longer than this is a quota in disguise (Groq's per-day limits, Azure's
# "retry after 86400 seconds"): park the key instead of cooling it.
LONG_WAIT_S = 15 * 60

_GO_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s))+$")


def parse_go_duration(text: str) -> float | None:
    """Parse `6m0s`, `20ms`, `2m59.56s`, `9m38.016s` into seconds; None when it is not one."""
    text = text.strip()
    if not text or not _GO_DURATION.match(text):
        return None
    return sum(float(num) * _GO_UNIT_S[unit] for num, unit in _GO_PART.findall(text))


def parse_retry_after_headers(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait per `retry-after-ms`, then `retry-after` (seconds or HTTP-date), as the SDKs do."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


_PHRASE = re.compile(
    r"(?:try again|retry) (?:in|after)\s+"
    r"(?P<value>\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s)(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s))*"
    r"|\d+(?:\.\d+)?\s*(?:seconds?|secs?|minutes?|mins?|milliseconds?)\b)",
    re.IGNORECASE,
)
_WORD_UNIT_S = {"ms": 1e-3, "mil": 1e-3, "sec": 1.0, "s": 1.0, "min": 60.0, "m": 60.0}


def parse_wait_phrase(message: str) -> float | None:
    """Find a wait in prose: "Please try again in 644ms", "retry after 6 seconds", "retry in 37.2s"."""
    match = _PHRASE.search(message or "")
    if not match:
        return None
    value = match.group("value").strip()
    go = parse_go_duration(value)
    if go is not None:
        return go
    num, unit = re.match(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]+)", value).groups()  # type: ignore[union-attr]
    unit = unit.lower()
    for prefix, scale in _WORD_UNIT_S.items():
        if unit.startswith(prefix):
            return float(num) * scale
    return None


def retry_after_from(headers: Mapping[str, str], message: str = "") -> float | None:
    """The server's own wait for this failure: headers first, then the body's prose."""
    header_wait = parse_retry_after_headers(headers)
    if header_wait is not None:
        return header_wait
    return parse_wait_phrase(message)
