"""Progress while a call waits, so a client's request timeout (often 60 s, reset by progress) never
fires on a call that is only waiting: for a cooling key, a busy key, or a slow first byte."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

HEARTBEAT_S = 5.0


def interval() -> float:
    """Seconds between two heartbeats (read at each use, so tests can shorten it)."""
    return HEARTBEAT_S


@asynccontextmanager
async def heartbeat(notify: Callable[[str], Awaitable[None]], describe: Callable[[float], str]) -> AsyncIterator[None]:
    """While the block runs, say `describe(seconds so far)` every few seconds."""
    started = time.monotonic()
    every_s = interval()

    async def beat() -> None:
        while True:
            await anyio.sleep(every_s)
            await notify(describe(time.monotonic() - started))

    async with anyio.create_task_group() as group:
        group.start_soon(beat)
        try:
            yield
        finally:
            group.cancel_scope.cancel()
