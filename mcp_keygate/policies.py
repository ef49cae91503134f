"""Team policies on a shared server: which routes, models and presets a token may use, and its budget.

A policy names the tokens it governs (by their names from `[server] auth_tokens`). Tokens no
policy names, and stdio callers, may use everything. Naming `routes` or `models` restricts both
kinds: a policy with `routes = ["cheap"]` can call the route `cheap` and nothing else directly. A
preset is allowed when `presets` lists it, or — without a `presets` list — when its route is.
Budgets (rpm, tpm, rpd, tpd) count per token, in the state store, so every instance behind a
load balancer enforces the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config, PolicyConfig
from .errors import CallError
from .keys.budget import Budget


class PolicyRefused(CallError):
    """The caller's policy does not allow this call (or its budget is spent); the message names the policy."""


@dataclass(frozen=True)
class TokenPolicy:
    name: str
    rules: PolicyConfig
    budget: Budget

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
            token: TokenPolicy(name, rules, rules.budget())
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
