"""The fallback loop: the one place that knows the order of things.

For each model of the route: lease the best usable key, call, classify, report to the pool, and
decide — next key (the key is to blame), one retry on another key then next model (the model or
provider is struggling), next larger model (the context did not fit), or stop (the request is
wrong). When nothing is usable, wait for the earliest key if it is ready within `max_wait_s`.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import anyio
import httpx2

from .attempts import AttemptRunner, NoticeLevel, Notify
from .backoff import Backoffs
from .config import Config
from .context import TokenEstimator, fit_history, reserve_for_answer
from .errors import CallError
from .heartbeat import heartbeat, interval
from .keys.base import KeyPool, Lease
from .keys.rules import Fit
from .messages import Completion, Message
from .modalities import able_models, unable_message
from .outcomes import Outcome, Verdict
from .providers import CallParams, Provider
from .route_report import AttemptRecord, failure_message

log = logging.getLogger("mcp_keygate.router")


# How often a call waiting for a busy key looks again (doubling up to the maximum).
BUSY_POLL_S = 0.005
MAX_BUSY_POLL_S = 0.1
BUSY_WAIT_S = 15.0
# Pause between passes over the route when the last pass met upstream trouble.
RETRY_PAUSE_S = 1.0
_TRANSIENT = {o.value for o in Outcome if o.is_transient_upstream}


class Pass(enum.Enum):
    """Why a model did not answer and the route goes on."""

    NO_KEY = "no usable key"
    TOO_LONG = "the context did not fit its window"
    NOT_FOUND = "the provider does not know the model"


@dataclass(slots=True)
class Routed:
    """A successful answer and how it was reached."""

    completion: Completion
    model: str
    provider: str
    key_id: str
    attempts: list[AttemptRecord] = field(default_factory=list)
    trimmed_turns: int = 0


class RouteFailed(CallError):
    """No model of the route could answer; the message says what was tried and when to retry."""

    def __init__(self, message: str, attempts: list[AttemptRecord], ready_in_s: float | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.ready_in_s = ready_in_s


class RequestRejected(CallError):
    """The upstream rejected the request itself; another key or model would not help."""

    def __init__(self, message: str, attempts: list[AttemptRecord]) -> None:
        super().__init__(message)
        self.attempts = attempts


class Router:
    def __init__(
        self,
        config: Config,
        pool: KeyPool,
        providers: dict[str, Provider],
        client: Callable[[], httpx2.AsyncClient],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.pool = pool
        self.providers = providers
        self.attempts = AttemptRunner(config, pool, client)
        self._clock = clock
        self.backoffs = Backoffs()
        self.estimator = TokenEstimator()
        self.observers = self.attempts.observers

    async def route(
        self,
        chain: list[str],
        messages: list[Message],
        params: CallParams,
        max_wait_s: float,
        notify: Notify | None = None,
    ) -> Routed:
        """Answer `messages` with the first model of `chain` that can, waiting at most `max_wait_s`."""
        notify = notify or _silent
        attempts: list[AttemptRecord] = []
        chain = await self._able(chain, messages, attempts, notify)
        deadline = self._clock() + max(0.0, max_wait_s)
        # A busy key is not a cooling one: waiting for a request in flight is worth it even when
        # the caller would not wait for a cooldown.
        busy_deadline = max(deadline, self._clock() + BUSY_WAIT_S)
        poll = BUSY_POLL_S
        busy_since, told_busy = 0.0, 0.0  # when the wait for a busy key began, and when it was last said
        missing: set[str] = set()  # models the provider said it does not have: not tried again in this call
        while True:
            first = len(attempts)
            wait_on_busy = self._clock() < busy_deadline
            result = await self._try_chain(chain, messages, params, attempts, notify, wait_on_busy, missing)
            if isinstance(result, Routed):
                return result
            if result is Fit.BUSY:
                # A key is only busy (a probe or a headroom-limited request in flight): wait for it
                # rather than falling back while the preferred model is fine.
                busy_since = busy_since or self._clock()
                if self._clock() - busy_since >= told_busy + interval():
                    told_busy = self._clock() - busy_since
                    await notify(f"waiting for a key of {', '.join(chain)} busy with a request ({told_busy:.0f} s)")
                await anyio.sleep(poll)
                poll = min(poll * 2, MAX_BUSY_POLL_S)
                continue
            busy_since, told_busy = 0.0, 0.0
            poll = BUSY_POLL_S
            outcomes = {a.outcome for a in attempts[first:]}
            if Outcome.CONTEXT_TOO_LONG.value in outcomes:
                message = await failure_message(self.config, self.pool, chain, attempts, None, too_long=True)
                raise RouteFailed(message, attempts, None)
            if Outcome.INVALID_OUTPUT.value in outcomes:  # another pass would ask the same models again
                message = await failure_message(self.config, self.pool, chain, attempts, None, invalid_output=True)
                raise RouteFailed(message, attempts, None)
            wait = await self.ready_in([name for name in chain if name not in missing])
            if wait is not None and outcomes & _TRANSIENT:
                wait = max(wait, RETRY_PAUSE_S)  # never hammer a struggling upstream in a tight loop
            if wait is None or self._clock() + wait > deadline:
                down = {p: u.reason for p, u in self.backoffs.down().items()}
                message = await failure_message(
                    self.config, self.pool, chain, attempts, wait, unreachable=down, missing=missing
                )
                raise RouteFailed(message, attempts, wait)
            await self._wait_for_cooling(chain, wait, notify)

    async def _able(
        self, chain: list[str], messages: list[Message], attempts: list[AttemptRecord], notify: Notify
    ) -> list[str]:
        """The models of the chain that take the call's images and PDFs; RouteFailed when none does."""
        able, skipped = able_models(self.config, chain, messages)
        for record in skipped:
            attempts.append(record)
            await notify(record.reason, "notice")
        if not able:
            raise RouteFailed(unable_message(chain, skipped, messages), attempts, None)
        return able

    async def _wait_for_cooling(self, chain: list[str], wait: float, notify: Notify) -> None:
        """Sleep until the earliest key is ready, saying so every few seconds (clients time out on silence)."""
        names = ", ".join(chain)
        await notify(f"every key of {names} is cooling; waiting {wait:.1f} s for the first")
        until = self._clock() + wait

        def left(_: float) -> str:
            return f"still waiting for a cooling key of {names}: {max(0.0, until - self._clock()):.0f} s left"

        async with heartbeat(notify, left):
            await anyio.sleep(max(wait, 0.01))

    async def _try_chain(
        self,
        chain: list[str],
        messages: list[Message],
        params: CallParams,
        attempts: list[AttemptRecord],
        notify: Notify,
        wait_on_busy: bool,
        missing: set[str],
    ) -> Routed | Fit | None:
        """One pass over the chain: an answer, Fit.BUSY (worth a short wait), or None (nothing usable)."""
        too_long_for: int | None = None  # the window that just overflowed
        for position, name in enumerate(chain):
            if name in missing:
                continue
            model = self.config.models[name]
            upstream = self.config.upstream_model(name)
            window = model.context_window
            if too_long_for is not None and window is not None and window <= too_long_for:
                continue
            if self.backoffs.model_wait(model.provider, upstream, self._clock()) > 0:
                continue
            if self.backoffs.unreachable(model.provider, self._clock()) is not None:
                continue
            model_params = replace(
                params,
                max_tokens=params.max_tokens or model.max_output_tokens,
                stream=self.config.providers[model.provider].stream,
            )
            sent, trimmed = messages, 0
            if window is not None:
                budget = window - reserve_for_answer(window, model_params.max_tokens)
                sent, trimmed = fit_history(messages, budget, self.estimator, upstream)
                if trimmed:
                    dropped = f"{name}: dropped the {trimmed} oldest turn(s) to fit its {window}-token window"
                    await notify(dropped, "notice")
            result = await self._try_model(name, sent, model_params, attempts, notify, wait_on_busy)
            if isinstance(result, Routed):
                result.trimmed_turns = trimmed
                return result
            if result is Fit.BUSY:
                return Fit.BUSY
            if result is Pass.TOO_LONG:
                too_long_for = window or 0
            if result is Pass.NOT_FOUND:
                missing.add(name)
            if position + 1 < len(chain):
                for observer in self.observers:
                    observer.on_fallback(name, chain[position + 1])
                await notify(f"no usable key for {name}; falling back to {chain[position + 1]}", "warning")
        return None

    async def _try_model(
        self,
        name: str,
        sent: list[Message],
        params: CallParams,
        attempts: list[AttemptRecord],
        notify: Notify,
        wait_on_busy: bool,
    ) -> Routed | Fit | Pass:
        """Keys of one model in turn: an answer, Fit.BUSY (worth a short wait), or why the route moves
        on. Raises RequestRejected when the request itself is wrong."""
        model = self.config.models[name]
        upstream = self.config.upstream_model(name)
        provider = self.providers[model.provider]
        transient_failures = 0
        tried: set[str] = set()
        cost = self.estimator.estimate(upstream, sent) + (params.max_tokens or 0)
        while True:
            lease = await self.pool.acquire(model.provider, upstream, exclude=tried, cost=cost)
            if lease is Fit.BUSY and wait_on_busy:
                return Fit.BUSY
            if not isinstance(lease, Lease):
                return Pass.NO_KEY
            tried.add(lease.key.key_id)
            verdict, completion = await self.attempts.run(provider, lease, sent, params, name, notify)
            attempts.append(self.attempts.recorded(name, lease, verdict))
            if verdict.outcome is Outcome.UNREACHABLE:
                held = self.backoffs.mark_unreachable(model.provider, verdict.reason, self._clock())
                await notify(f"{model.provider} cannot be reached ({verdict.reason}); held back {held:g} s", "warning")
                return Pass.NO_KEY
            self.backoffs.mark_reachable(model.provider)
            if verdict.outcome is Outcome.OK and completion is not None:
                self.estimator.calibrate(upstream, sent, completion.usage.input_tokens)
                return Routed(completion, name, model.provider, lease.key.key_id, attempts)
            if verdict.outcome.blames_key:
                await notify(f"{lease.key.key_id} {_describe(verdict)}, trying next key", "warning")
                continue
            if verdict.outcome.is_transient_upstream or verdict.outcome is Outcome.INVALID_OUTPUT:
                transient_failures += 1
                if transient_failures < 2:
                    retry = f"{name} {_describe(verdict)} on {lease.key.key_id}, retrying on another key"
                    await notify(retry, "warning")
                    continue
                if verdict.outcome is Outcome.OVERLOADED:
                    # The provider said so twice: spare it for a moment, for every call. A plain 5xx
                    # or a timeout is not such a statement; one unlucky call must not block a model.
                    self.backoffs.spare_model(model.provider, upstream, verdict.retry_after_s, self._clock())
                return Pass.NO_KEY
            if verdict.outcome is Outcome.CONTEXT_TOO_LONG:
                return Pass.TOO_LONG
            if verdict.outcome is Outcome.MODEL_NOT_FOUND:
                # A misspelt or retired model (or Azure deployment) fails on every key alike.
                unknown = f"{name}: {model.provider} does not know the model {upstream!r}; trying the next model"
                await notify(unknown, "warning")
                return Pass.NOT_FOUND
            raise RequestRejected(
                f"{name} rejected the request ({verdict.reason}); this is a problem with the request, "
                "not with a key, so no other key or model was tried",
                attempts,
            )

    async def ready_in(self, chain: list[str]) -> float | None:
        """Seconds until any model of the chain has a usable key (0: now); None: never without a fix."""
        now = self._clock()
        best: float | None = None
        for name in chain:
            model = self.config.models[name]
            upstream = self.config.upstream_model(name)
            wait = await self.pool.ready_in(model.provider, upstream)
            if wait is None:
                continue
            if self.backoffs.unreachable(model.provider, now) is not None:
                continue  # it will not come back by itself while this call waits
            wait = max(wait, self.backoffs.model_wait(model.provider, upstream, now))
            best = wait if best is None else min(best, wait)
        return best


def _describe(verdict: Verdict) -> str:
    words = {
        Outcome.RATE_LIMITED: "rate-limited",
        Outcome.QUOTA_EXHAUSTED: "out of quota",
        Outcome.AUTH_FAILED: "rejected (auth)",
        Outcome.OVERLOADED: "overloaded",
        Outcome.UPSTREAM_ERROR: "upstream error",
        Outcome.TIMEOUT: "timed out",
        Outcome.UNREACHABLE: "unreachable",
        Outcome.MODEL_NOT_FOUND: "model not found",
        Outcome.INVALID_OUTPUT: "answered outside response_schema",
    }
    text = words.get(verdict.outcome, verdict.outcome.value)
    if verdict.retry_after_s:
        text += f" for {verdict.retry_after_s:g} s"
    return text


async def _silent(message: str, level: NoticeLevel = "info") -> None:
    return None
