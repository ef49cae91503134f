"""Choosing the state backend: the one place that turns `[state]` into a key pool and a store.

`serve` (through `Keygate`), `status`, the tests and the benchmarks all come here, so a backend is
chosen — and a missing Redis client or URL is reported — the same way everywhere.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import Config, state_path
from .errors import StoreError
from .keys.base import KeyPool
from .keys.pool import LocalKeyPool
from .keys.rules import PoolSettings
from .keys.secret import ApiKey
from .store import Store, open_store

if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class Backend:
    pool: KeyPool
    store: Store


def pool_settings(config: Config) -> dict[str, PoolSettings]:
    return {
        name: PoolSettings(p.strategy, p.cooldown_s, p.max_cooldown_s, p.quota_cooldown_s)
        for name, p in config.providers.items()
    }


# A Redis that stops answering fails a call within seconds rather than hanging it (a URL's own
# `?socket_timeout=` wins).
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_TIMEOUT_S = 3.0


def redis_client(config: Config, env: Mapping[str, str] | None = None) -> Redis:
    """A client for `[state] url` (not connected yet); StoreError when the `redis` extra is missing.

    A command is retried once, at once, only when the connection failed (a pooled connection that
    died with a Redis restart is replaced); never after a timeout, when Redis may have run it.
    """
    try:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError:
        raise StoreError('the redis backend needs the Redis client: pip install "mcp-keygate[redis]"') from None
    url = config.state.redis_url(env)
    try:
        return Redis.from_url(
            url,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
    except ValueError as exc:
        raise StoreError(f"[state] url is not a usable Redis URL ({exc}); e.g. redis://localhost:6379/0") from None


def lease_ttl_s(config: Config) -> float:
    """A Redis lease outlives any attempt (twice the longest timeout), so only a crash expires one."""
    return max((p.timeout_s for p in config.providers.values()), default=60.0) * 2 + 30


def open_backend(
    config: Config,
    keys: dict[str, list[ApiKey]],
    *,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    store: Store | None = None,
) -> Backend:
    """The pool and store `[state]` asks for (not opened); `store` replaces the configured one (tests)."""
    settings = pool_settings(config)
    if config.state.backend == "redis" and store is None:
        redis = redis_client(config, env)  # first: it says what to install when the client is missing
        from .keys.redis_pool import RedisKeyPool

        prefix = config.state.prefix
        pool = RedisKeyPool(redis, prefix, keys, settings, clock, lease_ttl_s(config))
        return Backend(pool, open_store("redis", redis=redis, prefix=prefix))
    return Backend(LocalKeyPool(keys, settings, clock), store or configured_store(config, env))


def configured_store(config: Config, env: Mapping[str, str] | None = None) -> Store:
    """The store of `[state]` alone (what `mcp-keygate status` reads while a server runs)."""
    backend = config.state.backend
    if backend == "redis":
        return open_store("redis", redis=redis_client(config, env), prefix=config.state.prefix)
    return open_store(backend, state_path(config, env) if backend == "sqlite" else None)


async def reach_store(config: Config, env: Mapping[str, str] | None = None, timeout_s: float = 3.0) -> None:
    """Open and close the configured store once: a StoreError (one line) if it cannot be used, before
    a server starts on top of it (or `check` says OK)."""
    import anyio

    store = configured_store(config, env)
    try:
        with anyio.fail_after(timeout_s):
            await store.open()
    except TimeoutError:
        raise StoreError(f"the state store did not answer within {timeout_s:g} s: check [state] url") from None
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(StoreError, OSError):
            await store.close()
