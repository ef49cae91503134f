"""A streamed chat completion as a raw ASGI response: SSE comments while the call works (its
progress notices and heartbeats), then the answer's chunks — or an error event in OpenAI's shape.
A client that goes away cancels the call (its leases are given back, the upstream socket closed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

from ..attempts import NoticeLevel, Notify
from ..errors import KeygateError
from ..schemas import CompleteResult

Answer = Callable[[Notify], Awaitable[CompleteResult]]
Chunks = Callable[[CompleteResult], AsyncIterator[str]]
Failure = Callable[[KeygateError], str]


class ProgressStream:
    def __init__(self, answer: Answer, chunks: Chunks, failure: Failure, scrub: Callable[[str], str]) -> None:
        self.answer = answer
        self.chunks = chunks
        self.failure = failure
        self.scrub = scrub
        self._lock = anyio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def write(text: str) -> None:
            async with self._lock:
                await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        async def notify(message: str, level: NoticeLevel = "info") -> None:
            await write(f": {self.scrub(message).replace(chr(10), ' ')}\n\n")

        async with anyio.create_task_group() as group:
            group.start_soon(cancel_on_disconnect, receive, group.cancel_scope)
            await write(": keygate: routing\n\n")
            try:
                result = await self.answer(notify)
            except KeygateError as exc:
                await write(self.failure(exc))
            else:
                async for chunk in self.chunks(result):
                    await write(chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            group.cancel_scope.cancel()


async def cancel_on_disconnect(receive: Receive, scope: Any) -> None:
    """Cancel `scope` when the client goes away (read after the request body was consumed)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
