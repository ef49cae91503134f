"""When a provider's quota comes back, in seconds from now.

Providers state resets in several ways: a calendar rule (Anthropic spend limits on the 1st at
00:00 UTC, Gemini daily quotas at midnight Pacific, OpenRouter's free-model day at 00:00 UTC), a
date written in prose ("You will regain access on 2026-12-01 at 00:00 UTC."), or an epoch stamp in
a body (OpenRouter's `X-RateLimit-Reset`). A stated time that has already passed is a stale reply:
the caller falls back to the calendar rule rather than parking a key for 0 s.
"""

from __future__ import annotations

import datetime as dt
import re

_REGAIN = re.compile(
    r"regain access on (\d{4}-\d{2}-\d{2})(?: at (\d{1,2}:\d{2})(?::\d{2})?)?\s*(?:UTC|GMT|Z)?", re.IGNORECASE
)


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def seconds_to_next_month_utc(now: dt.datetime | None = None) -> float:
    """Until 00:00 UTC on the 1st of next month (Anthropic's monthly spend limits)."""
    current = _now(now)
    year, month = (current.year + 1, 1) if current.month == 12 else (current.year, current.month + 1)
    return (dt.datetime(year, month, 1, tzinfo=dt.UTC) - current).total_seconds()


def seconds_to_utc_midnight(now: dt.datetime | None = None) -> float:
    """Until the next 00:00 UTC (OpenRouter's daily free-model allowance)."""
    current = _now(now)
    midnight = (current + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - current).total_seconds()


def seconds_to_pacific_midnight(now: dt.datetime | None = None) -> float | None:
    """Until the next midnight in America/Los_Angeles (Gemini's daily quotas); None without tz data."""
    try:
        from zoneinfo import ZoneInfo

        pacific = ZoneInfo("America/Los_Angeles")
    except Exception:
        return None
    local = _now(now).astimezone(pacific)
    midnight = (local + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - local).total_seconds()


def seconds_until(when: dt.datetime, now: dt.datetime | None = None) -> float | None:
    """Seconds until `when`; None when it has already passed (a stale reply)."""
    left = (when - _now(now)).total_seconds()
    return left if left > 0 else None


def regain_access_wait(message: str, now: dt.datetime | None = None) -> float | None:
    """The wait in "You will regain access on 2026-12-01 at 00:00 UTC."; None if absent or past."""
    match = _REGAIN.search(message or "")
    if not match:
        return None
    clock = match.group(2) or "00:00"
    try:
        when = dt.datetime.fromisoformat(f"{match.group(1)}T{clock.zfill(5)}:00+00:00")
    except ValueError:
        return None
    return seconds_until(when, now)


def epoch_wait(stamp: object, now: dt.datetime | None = None) -> float | None:
    """An epoch stamp in seconds or milliseconds (OpenRouter's `X-RateLimit-Reset`); None if past or garbled."""
    try:
        value = float(str(stamp))
    except ValueError:
        return None
    if value > 1e11:  # milliseconds
        value /= 1000.0
    try:
        when = dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return seconds_until(when, now)
