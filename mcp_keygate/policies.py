"""Team policies on a shared server: which routes, models and presets a token may use, and its budget.

A policy names the tokens it governs (by their names from `[server] auth_tokens`). Tokens no
policy names, and stdio callers, may use everything. Naming `routes` or `models` restricts both
kinds: a policy with `routes = ["cheap"]` can call the route `cheap` and nothing else directly. A
preset is allowed when `presets` lists it, or — without a `presets` list — when its route is.
Budgets (rpm, tpm, rpd, tpd; usd_per_day, usd_per_month) count per token, in the state store, so
every instance behind a load balancer enforces the same one. A call is charged its estimate before
it is sent (so concurrent calls can never overspend together) and corrected with what it really
used once it is answered (or refunded when it fails).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .config import Config, PolicyConfig
from .errors import CallError
from .keys.budget import NO_MONEY, Budget, MoneyBudget
from .store import Store


class PolicyRefused(CallError):
    """The caller's policy does not allow this call (or its budget is spent); the message names the policy."""


@dataclass(frozen=True)
class TokenPolicy:
    name: str
    rules: PolicyConfig
    budget: Budget
    money: MoneyBudget = NO_MONEY

    @property
    def restricts_calls(self) -> bool:
        return self.rules.routes is not None or self.rules.models is not None

    def may_call(self, config: Config, name: str) -> bool:
        """May a call name this route or model directly?"""
        if not self.restricts_calls:
            return True
        if name in config.route_names():
            return name in (self.rules.routes or [])
        return name in (self.rules.models or [])

    def may_use_preset(self, config: Config, preset: str) -> bool:
        if self.rules.presets is not None:
            return preset in self.rules.presets
        return self.may_call(config, config.presets[preset].route)

    def check(self, config: Config, token: str, model: str, preset: str | None) -> None:
        """Raise PolicyRefused, naming the policy and what it allows, unless the call is allowed."""
        if preset is not None:
            if not self.may_use_preset(config, preset):
                allowed = [p for p in config.presets if self.may_use_preset(config, p)]
                raise PolicyRefused(
                    f"token {token!r} may not use the preset {preset!r} under policy {self.name!r} "
                    f"(it allows: {', '.join(allowed) or 'no presets'}); ask an operator to change "
                    f"[policies.{self.name}]"
                )
            return
        if not self.may_call(config, model):
            allowed = [*(self.rules.routes or []), *(self.rules.models or [])]
            kind = "route" if model in config.route_names() else "model"
            raise PolicyRefused(
                f"token {token!r} may not use the {kind} {model!r} under policy {self.name!r} "
                f"(it allows: {', '.join(allowed) or 'nothing directly'}); ask an operator to change "
                f"[policies.{self.name}]"
            )

    def models(self, config: Config) -> set[str]:
        """Every model this policy can reach, through routes, models or presets."""
        reachable: set[str] = set()
        for name in [*config.route_names(), *config.models]:
            if self.may_call(config, name):
                reachable.update(config.route(name) or [])
        for preset, spec in config.presets.items():
            if self.may_use_preset(config, preset):
                reachable.update(config.route(spec.route) or [])
        return reachable

    def providers(self, config: Config) -> set[str]:
        return {config.models[m].provider for m in self.models(config)}


class Policies:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._by_token = {
            token: TokenPolicy(name, rules, rules.budget(), MoneyBudget(rules.usd_per_day, rules.usd_per_month))
            for name, rules in config.policies.items()
            for token in rules.tokens
        }

    def for_token(self, token: str) -> TokenPolicy | None:
        return self._by_token.get(token)

    def is_operator(self, token: str) -> bool:
        """Operators read /metrics (every caller's usage) and may reset keys: the tokens
        `[server] operator_tokens` names, or, without that list, every token no policy governs."""
        listed = self.config.server.operator_tokens
        if listed is not None:
            return token in listed
        return self.for_token(token) is None

    def providers_for(self, token: str) -> set[str] | None:
        """The providers a token may see (None: all of them)."""
        policy = self.for_token(token)
        if policy is None or not policy.restricts_calls:
            return None
        return policy.providers(self.config)


@dataclass(frozen=True, slots=True)
class Charge:
    """What a call reserved against its caller's budgets, to be corrected once it is answered."""

    caller: str
    policy: TokenPolicy | None
    tokens: int = 0
    usd: float = 0.0

    @property
    def tokens_counted(self) -> bool:
        return self.policy is not None and (self.policy.budget.tpm is not None or self.policy.budget.tpd is not None)


class Charges:
    """Charges calls to their caller's token and money budgets in the store, and settles them."""

    def __init__(self, policies: Policies, store: Store) -> None:
        self.policies = policies
        self.store = store

    async def reserve(self, caller: str, tokens: int, usd: float) -> Charge:
        """Reserve `tokens` and `usd` (the call's estimates), or refuse the call naming the policy,
        the budget and when it has room again. Nothing stays charged when the call is refused."""
        policy = self.policies.for_token(caller)
        if policy is None:
            return Charge(caller, None)
        if policy.budget:
            wait, why = await self.store.spend_budget(f"token:{caller}", policy.budget, time.time(), 1, tokens)
            if wait > 0:
                raise _over(caller, policy, policy.budget.describe(), why.removeprefix("client-side budget: "), wait)
        if not policy.money:
            return Charge(caller, policy, tokens)
        wait, why = await self.store.spend_money(f"token:{caller}", policy.money, time.time(), usd)
        if wait > 0:
            if policy.budget:  # give the token budget back: this call never ran
                await self.store.spend_budget(f"token:{caller}", policy.budget, time.time(), -1, -tokens, enforce=False)
            raise _over(caller, policy, policy.money.describe(), why, wait)
        return Charge(caller, policy, tokens, usd)

    async def settle(self, charge: Charge, tokens: int, usd: float) -> None:
        """Replace the estimates with what the call used (0 and 0 when it failed)."""
        policy = charge.policy
        if policy is None:
            return
        now = time.time()
        if charge.tokens_counted and tokens != charge.tokens:
            correction = tokens - charge.tokens
            await self.store.spend_budget(f"token:{charge.caller}", policy.budget, now, 0, correction, enforce=False)
        if policy.money and usd != charge.usd:
            await self.store.spend_money(f"token:{charge.caller}", policy.money, now, usd - charge.usd, enforce=False)


def _over(caller: str, policy: TokenPolicy, limits: str, why: str, wait: float) -> PolicyRefused:
    when = "never at this size (shorten the request or lower max_tokens)" if wait == math.inf else f"in {_span(wait)}"
    return PolicyRefused(
        f"token {caller!r} is over its budget under policy {policy.name!r} ({limits}): {why}; it has room again {when}"
    )


def _span(seconds: float) -> str:
    """`42 s`, `17 min`, `5 h 3 min`, `12 days`: how long until a budget has room again."""
    seconds = math.ceil(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86_400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86_400} days"
