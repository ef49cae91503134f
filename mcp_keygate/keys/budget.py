"""Client-side budgets: requests and tokens a key may spend per minute or per day.

A pool with known limits should never see a 429. What a key spent is kept as a few dozen buckets
per window (1/60 of the window each), and a request is allowed only if it fits in every window
ending now, whatever part of the oldest bucket is still inside it. Counting the oldest bucket
whole makes this stricter than the provider's own window — fixed, sliding or token bucket — at a
cost of at most 1/60 of the capacity.

Spend is charged when a key is leased (so concurrent calls can never overspend) and corrected with
the tokens the answer really used.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass

MINUTE_S = 60.0
DAY_S = 86_400.0
BUCKETS_PER_WINDOW = 60

Bucket = list[float]  # [start, requests, tokens]
Spend = dict[str, list[Bucket]]  # window name ("minute", "day") → buckets, oldest first


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one key (None: no limit). Counted over every model the key calls."""

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    tpd: int | None = None

    def __bool__(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.rpd is not None or self.tpd is not None

    def _limits(self) -> list[tuple[str, float, float, float]]:
        """(window, seconds, request limit, token limit) for each window that has a limit."""
        limits = []
        if self.rpm is not None or self.tpm is not None:
            limits.append(("minute", MINUTE_S, _or_inf(self.rpm), _or_inf(self.tpm)))
        if self.rpd is not None or self.tpd is not None:
            limits.append(("day", DAY_S, _or_inf(self.rpd), _or_inf(self.tpd)))
        return limits

    def describe(self) -> str:
        units = ((self.rpm, "rpm"), (self.tpm, "tpm"), (self.rpd, "rpd"), (self.tpd, "tpd"))
        return ", ".join(f"{v} {unit}" for v, unit in units if v)


NO_BUDGET = Budget()


def _or_inf(value: int | None) -> float:
    return math.inf if value is None else value


def _counted(buckets: list[Bucket], window_s: float, now: float) -> list[Bucket]:
    """Buckets any part of which lies in the window ending now."""
    width = window_s / BUCKETS_PER_WINDOW
    return [b for b in buckets if b[0] + width > now - window_s]


def wait_for_budget(spend: Spend, budget: Budget, now: float, tokens: int = 0) -> tuple[float, str]:
    """Seconds until one more request of `tokens` fits every window (0: now; inf: never), and why not."""
    longest, why = 0.0, ""
    for window, window_s, max_requests, max_tokens in budget._limits():
        if tokens > max_tokens:
            why = f"one request of about {tokens} tokens exceeds the budget ({max_tokens:g} tokens per {window})"
            return math.inf, why
        buckets = _counted(spend.get(window, []), window_s, now)
        requests = sum(b[1] for b in buckets)
        used = sum(b[2] for b in buckets)
        if requests + 1 <= max_requests and used + tokens <= max_tokens:
            continue
        limit = f"{max_requests:g} requests" if requests + 1 > max_requests else f"{max_tokens:g} tokens"
        width = window_s / BUCKETS_PER_WINDOW
        wait = math.inf
        for bucket in buckets:  # oldest first: drop buckets until the request fits
            requests -= bucket[1]
            used -= bucket[2]
            if requests + 1 <= max_requests and used + tokens <= max_tokens:
                wait = bucket[0] + width + window_s - now
                break
        if wait > longest:
            longest, why = wait, f"client-side budget: {limit} per {window} used up"
    return longest, why


def charge(spend: Spend, budget: Budget, now: float, requests: int, tokens: int) -> None:
    """Count `requests` and `tokens` against every window of the budget.

    Tokens may be negative: an estimate corrected downwards once the answer says what was used. The
    estimate may sit in an older bucket than `now` (a call takes seconds), so a refund is taken from
    the newest buckets back, never lost and never below zero.
    """
    for window, window_s, _, _ in budget._limits():
        width = window_s / BUCKETS_PER_WINDOW
        start = math.floor(now / width) * width
        buckets = [b for b in spend.get(window, []) if b[0] + width > now - window_s]
        if buckets and buckets[-1][0] == start:
            buckets[-1][1] += requests
        elif requests or tokens > 0:
            buckets.append([start, float(requests), 0.0])
        if tokens > 0:
            buckets[-1][2] += tokens
        refund = float(-tokens)
        for bucket in reversed(buckets):
            if refund <= 0:
                break
            taken = min(refund, bucket[2])
            bucket[2] -= taken
            refund -= taken
        spend[window] = buckets


def try_spend(spend: Spend, budget: Budget, now: float, requests: int, tokens: int, enforce: bool) -> tuple[float, str]:
    """Charge `spend` if it fits (or `enforce` is off); else (seconds until it fits, why), charging nothing."""
    if enforce:
        wait, why = wait_for_budget(spend, budget, now, tokens)
        if wait > 0:
            return wait, why
    charge(spend, budget, now, requests, tokens)
    return 0.0, ""


# Money budgets (a policy's `usd_per_day`, `usd_per_month`): calendar windows in UTC, which is how
# spend is billed and how people think of it ("$5 a day" starts again at midnight, not 24 h after a
# call). The state is {"day": [YYYY-MM-DD, dollars], "month": [YYYY-MM, dollars]}.
MoneySpend = dict[str, list]


@dataclass(frozen=True, slots=True)
class MoneyBudget:
    usd_per_day: float | None = None
    usd_per_month: float | None = None

    def __bool__(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None

    def windows(self) -> list[tuple[str, float]]:
        found = [("day", self.usd_per_day), ("month", self.usd_per_month)]
        return [(window, limit) for window, limit in found if limit is not None]

    def describe(self) -> str:
        return ", ".join(f"usd_per_{window} = ${limit:g}" for window, limit in self.windows())


NO_MONEY = MoneyBudget()


def period(window: str, now: float) -> str:
    """The UTC day (YYYY-MM-DD) or month (YYYY-MM) that `now` falls in."""
    return time.strftime("%Y-%m-%d" if window == "day" else "%Y-%m", time.gmtime(now))


def period_end(window: str, now: float) -> float:
    """When the UTC day or month containing `now` ends (the epoch second the budget resets)."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return (day + dt.timedelta(days=1)).timestamp()
    first = day.replace(day=1)
    if first.month == 12:
        return first.replace(year=first.year + 1, month=1).timestamp()
    return first.replace(month=first.month + 1).timestamp()


def money_spent(spend: MoneySpend, window: str, now: float) -> float:
    """Dollars charged in the current period of `window` (0 once the period has turned)."""
    current = spend.get(window)
    return float(current[1]) if current and current[0] == period(window, now) else 0.0


def try_spend_money(
    spend: MoneySpend, budget: MoneyBudget, now: float, amount: float, enforce: bool
) -> tuple[float, str]:
    """Charge `amount` dollars (negative: a refund, never below 0) if every window has room (or
    `enforce` is off); else (seconds until the fullest window resets — inf if the amount alone is
    over a limit —, why) and charge nothing."""
    if enforce:
        longest, why = 0.0, ""
        for window, limit in budget.windows():
            spent = money_spent(spend, window, now)
            if amount > limit:
                why = f"usd_per_{window} = ${limit:g}: this call may cost up to ${amount:.4f}, more than all of it"
                return math.inf, why
            if spent + amount > limit + 1e-12 and period_end(window, now) - now > longest:
                resets = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(period_end(window, now)))
                longest = period_end(window, now) - now
                why = f"usd_per_{window} = ${limit:g} is spent (${spent:.4f} used; it resets at {resets})"
        if longest > 0:
            return longest, why
    for window, _ in budget.windows():
        spend[window] = [period(window, now), max(0.0, money_spent(spend, window, now) + amount)]
    return 0.0, ""
