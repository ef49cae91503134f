"""Progress while a call waits, so a client's request timeout (often 60 s, reset by progress) never
fires on a call that is only waiting: for a cooling key, a busy key, or a slow first byte.

Every attempt is wrapped, so this sits on the hot path: a timer on the event loop costs a few
microseconds, where a task group per attempt cost ~65 µs. A task is made only when a beat is due
(a call that has already waited seconds), and it is cancelled with the block.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

HEARTBEAT_S = 5.0


def interval() -> float:
    """Seconds between two heartbeats (read at each use, so tests can shorten it)."""
    return HEARTBEAT_S


@asynccontextmanager
async def heartbeat(notify: Callable[[str], Awaitable[None]], describe: Callable[[float], str]) -> AsyncIterator[None]:
    """While the block runs, say `describe(seconds so far)` every few seconds."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    every_s = interval()
    beats: set[asyncio.Task[None]] = set()
    timer: asyncio.TimerHandle | None = None

    def beat() -> None:
        nonlocal timer
        task = loop.create_task(_say(notify, describe(time.monotonic() - started)))
        beats.add(task)
        task.add_done_callback(beats.discard)
        timer = loop.call_later(every_s, beat)

    timer = loop.call_later(every_s, beat)
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
        for task in list(beats):
            task.cancel()


async def _say(notify: Callable[[str], Awaitable[None]], message: str) -> None:
    """A beat that cannot be delivered (the client went away) is dropped: the call itself decides."""
    try:
        await notify(message)
    except Exception:
        return
