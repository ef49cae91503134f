"""Redis failures as one `StoreError` line (where Redis is, what failed, what to check).

Every public method of the Redis store and pool is wrapped, so a stopped or unreachable Redis
reaches the user as a sentence, not a `redis.exceptions.ConnectionError` traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import StoreError

P = ParamSpec("P")
R = TypeVar("R")


class UsesRedis(Protocol):
    redis: Redis


S = TypeVar("S", bound=UsesRedis)


def where(redis: Redis) -> str:
    """`redis://host:port/db` of a client, without credentials."""
    kwargs: dict[str, Any] = getattr(redis.connection_pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def store_error(redis: Redis, exc: BaseException) -> StoreError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return StoreError(
        f"cannot use Redis at {where(redis)}: {detail} — check that redis-server is running and "
        "[state] url (or KEYGATE_REDIS_URL)"
    )


def redis_call(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Turn any RedisError the method meets into a StoreError naming the server."""

    @functools.wraps(method)
    async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except RedisError as exc:
            raise store_error(self.redis, exc) from None

    return wrapper
