"""One running mcp-keygate: the config wired into a pool, a store, providers, a router, the call
service and the read-side views. It owns their lifetime (open, close) and nothing else.

The MCP server, the HTTP app, the demo and the benchmarks drive `calls` and `views`;
`complete` is kept here as the short way in for code that embeds mcp-keygate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx2

from .activity import Activity
from .attempts import Notify, RouterObserver
from .auth import LOCAL_OWNER
from .calls import CallService, InFlight
from .complete_request import CompleteRequest
from .config import Config
from .errors import InvalidRequest
from .keys.secret import ApiKey
from .policies import Policies
from .providers import build_provider
from .reload_report import ReloadReport
from .router import Router
from .schemas import CompleteResult, ResetResult
from .store import Store
from .upstream import UpstreamClients
from .views import Views
from .wiring import open_backend, pool_settings

log = logging.getLogger("mcp_keygate")


class Keygate:
    def __init__(
        self,
        config: Config,
        *,
        env: Mapping[str, str] | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._clock = clock
        keys = config.resolve_keys(env)
        backend = open_backend(config, keys, env=env, clock=clock, store=store)
        self.pool, self.store = backend.pool, backend.store
        self.upstream = UpstreamClients(config, transport)
        self.activity = Activity()
        self._wire(config, keys, previous=None)

    calls: CallService

    def _wire(self, config: Config, keys: dict[str, list[ApiKey]], previous: Router | None) -> None:
        """Build what reads the config over the pool and store. On a reload, what the old router
        learned (unreachable providers, spared models, token estimates) and the count of calls in
        flight carry over; calls already running keep the objects they started with."""
        self.config = config
        self.keys = keys
        # Keys, and custom header values (they may carry a credential from the environment).
        self.secrets = [k.secret for ks in keys.values() for k in ks if k.secret]
        self.secrets += [v for p in config.providers.values() for v in p.headers.values() if len(v) >= 8]
        providers = {name: build_provider(name, p) for name, p in config.providers.items()}
        router = Router(config, self.pool, providers, self.upstream.next, self._clock)
        if previous is None:
            router.observers.append(self.activity)
        else:
            router.backoffs, router.estimator = previous.backoffs, previous.estimator
            router.observers.extend(previous.observers)
        in_flight = self.calls.in_flight if previous is not None else InFlight()
        self.router = router
        self.policies = Policies(config)
        self.calls = CallService(config, router, self.pool, self.store, self.policies, in_flight)
        self.views = Views(config, self.pool, self.store, router, self.policies, self._clock)

    async def reload(self, config: Config, env: Mapping[str, str] | None = None) -> ReloadReport:
        """Take a new config without a restart: keys, models, routes, presets, policies, limits.
        Keys still configured keep their state, new ones start ready, removed ones go; budgets and
        conversations are untouched. `[state]` and `[server]` are the running server's and stay
        (the report says when they changed). ConfigError, with nothing changed, if a key is unset."""
        restart_needed = [name for name in ("state", "server") if getattr(config, name) != getattr(self.config, name)]
        config = config.model_copy(update={"state": self.config.state, "server": self.config.server})
        keys = config.resolve_keys(env)
        report = ReloadReport.between(self.config, self.keys, config, keys, restart_needed)
        await self.pool.reconfigure(keys, pool_settings(config))
        await self.store.save_keys(self.pool.take_dirty())
        self.upstream.reconfigure(config)
        self._wire(config, keys, previous=self.router)
        return report

    async def __aenter__(self) -> Keygate:
        await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def open(self) -> None:
        await self.store.open()
        await self.pool.open(self.store)

    async def close(self) -> None:
        try:
            await self.store.save_keys(self.pool.take_dirty())
        finally:
            await self.upstream.aclose()
            await self.store.close()

    def observe(self, observer: RouterObserver) -> None:
        """Be told about every attempt and fallback (metrics)."""
        self.router.observers.append(observer)

    async def complete(
        self, request: CompleteRequest, *, caller: str = LOCAL_OWNER, notify: Notify | None = None
    ) -> CompleteResult:
        """Answer one turn (see `CallService.complete`)."""
        return await self.calls.complete(request, caller=caller, notify=notify)

    async def reset_key(self, key_id: str) -> ResetResult:
        """Operator reset: forget every hold on the key (it is `ready` again)."""
        if not await self.pool.reset(key_id):
            known = ", ".join(k.key_id for ks in self.keys.values() for k in ks) or "none"
            raise InvalidRequest(f"key_id: unknown key {key_id!r}; known: {known}")
        await self.store.save_keys(self.pool.take_dirty())
        log.info("key %s reset by an operator", key_id)
        return ResetResult(key_id=key_id, state="ready")
