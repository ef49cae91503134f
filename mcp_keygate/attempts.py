"""One attempt on one leased key: send it, report streamed progress, give the lease back with what
the answer taught us (or cancel it), and tell the observers (activity, metrics) and the log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal, Protocol

import anyio
import httpx2

from . import tracing
from .config import Config
from .heartbeat import heartbeat
from .keys.base import KeyPool, Lease
from .messages import Completion, Message
from .outcomes import Outcome, Verdict
from .providers import Attempt, CallParams, Provider, send_attempt
from .route_report import AttemptRecord
from .structured import parse_answer

log = logging.getLogger("mcp_keygate.router")

NoticeLevel = Literal["debug", "info", "notice", "warning"]


class Notify(Protocol):
    """Tells the caller what its call is doing: progress always, a client log message at `level`
    when the client asked for that level (MCP `logging/setLevel`)."""

    async def __call__(self, message: str, level: NoticeLevel = "info") -> None: ...


# A streamed answer reports progress about every this many characters (~100 tokens).
PROGRESS_EVERY_CHARS = 400


class RouterObserver(Protocol):
    """Told about every attempt and fallback (the status page's activity, metrics)."""

    def on_attempt(self, provider: str, model: str, key_id: str, outcome: str, seconds: float) -> None: ...

    def on_fallback(self, from_model: str, to_model: str) -> None: ...


class AttemptRunner:
    def __init__(self, config: Config, pool: KeyPool, client: Callable[[], httpx2.AsyncClient]) -> None:
        self.config = config
        self.pool = pool
        self._client = client
        self.observers: list[RouterObserver] = []

    async def run(
        self, provider: Provider, lease: Lease, messages: list[Message], params: CallParams, name: str, notify: Notify
    ) -> tuple[Verdict, Completion | None]:
        """Send, release the lease with the verdict (cancel it if the call is cancelled), observe."""
        started = time.perf_counter()
        received = reported = 0

        async def on_text(text: str) -> None:
            nonlocal received, reported
            received += len(text)
            if received - reported >= PROGRESS_EVERY_CHARS:
                reported = received
                await notify(f"{name}: about {received // 4} tokens received", "debug")

        def waiting(seconds: float) -> str:
            got = f"{received // 4} tokens so far" if received else "no answer yet"
            return f"{name}: still waiting on {lease.key.key_id} after {seconds:.0f} s ({got})"

        released = False
        span = (
            tracing.start_attempt(self.config.providers[lease.key.provider].type, lease, name)
            if tracing.enabled()
            else None
        )
        attempt = None
        try:
            async with heartbeat(notify, waiting):
                attempt = await send_attempt(
                    provider,
                    self._client(),
                    lease.key,
                    lease.model,
                    messages,
                    params,
                    on_text,
                    deadline_s=self.config.providers[lease.key.provider].timeout_s,
                    max_bytes=self.config.limits.max_response_bytes,
                )
            if attempt.completion is not None and params.response_schema is not None:
                attempt = structured_attempt(attempt, params.response_schema)
            used = None
            if attempt.completion is not None:
                used = attempt.completion.usage.input_tokens + attempt.completion.usage.output_tokens or None
            with anyio.CancelScope(shield=True):
                await self.pool.release(lease, attempt.verdict, attempt.headroom, used)
            released = True
        finally:
            if not released:
                with anyio.CancelScope(shield=True):
                    await self.pool.cancel(lease)
            if span is not None:
                tracing.end_attempt(span, attempt.verdict if attempt else None, attempt.completion if attempt else None)
        elapsed = time.perf_counter() - started
        for observer in self.observers:
            observer.on_attempt(lease.key.provider, name, lease.key.key_id, attempt.verdict.outcome.value, elapsed)
        return attempt.verdict, attempt.completion

    @staticmethod
    def recorded(name: str, lease: Lease, verdict: Verdict) -> AttemptRecord:
        """The attempt as the call's result and failure message list it (and the log line: INFO when
        it failed; an answer is at DEBUG, since the call's own INFO line names its model and key)."""
        record = AttemptRecord(
            name, lease.key.key_id, verdict.outcome.value, verdict.status_code, verdict.retry_after_s, verdict.reason
        )
        log.log(
            logging.DEBUG if verdict.outcome is Outcome.OK else logging.INFO,
            "attempt model=%s key=%s outcome=%s status=%s",
            name,
            record.key_id,
            record.outcome,
            record.status_code,
        )
        return record


def structured_attempt(attempt: Attempt, schema: dict[str, Any]) -> Attempt:
    """An answer to a call with a response_schema: parsed and checked, or a failed attempt
    (`invalid_output`) with the answer dropped — never returned as valid."""
    assert attempt.completion is not None
    value, problem = parse_answer(attempt.completion.text, schema)
    if problem is not None:
        verdict = Verdict(Outcome.INVALID_OUTPUT, attempt.verdict.status_code, reason=problem)
        return replace(attempt, verdict=verdict, completion=None)
    text = json.dumps(value, ensure_ascii=False)  # the JSON itself, without any fence around it
    return replace(attempt, completion=replace(attempt.completion, text=text, data=value))
