"""The call service: one `complete` from request to stored answer.

Check the request, load the caller's history, enforce its policy and budget, route it (keys and
fallbacks are the router's business), then write the turns, what the call taught us about keys,
and its usage in one store transaction. Presets come through here too, as a rendered request.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import anyio

from .attachments import Attachment
from .attempts import Notify
from .auth import LOCAL_OWNER
from .complete_request import CompleteRequest, checked_messages
from .config import Config
from .context import raw_estimate
from .conversations import check_room, load_history, new_conversation_id, request_messages, with_attachment_bytes
from .errors import CallError, InvalidRequest
from .keys.base import KeyPool
from .keys.state import KeyRecord
from .messages import Message, Turn
from .policies import Charges, Policies
from .pricing import Prices, rounded
from .providers import CallParams
from .router import Routed, RouteFailed, Router
from .schemas import AttemptOut, CompleteResult, UsageOut
from .store import Store
from .store.base import UsageRow
from .templates import render

# Answers a call whose route failed (the client's own model, over MCP sampling), or raises RouteFailed.
LastResort = Callable[[list[Message], CallParams, RouteFailed], Awaitable[Routed]]

# Key counters (requests, headroom, budget spend) are written at most this often; state changes at once.
COUNTER_FLUSH_S = 1.0
# Output tokens a money budget reserves for a call that sets no max_tokens on a model that has no
# max_output_tokens (Anthropic's default cap here too).
DEFAULT_OUTPUT_ESTIMATE = 4096


class CallTimedOut(CallError):
    """The whole call ran past `[limits] call_timeout_s`."""


class InFlight:
    """How many calls are running, and whether the server is draining (graceful shutdown waits on both)."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False


class CallService:
    def __init__(
        self,
        config: Config,
        router: Router,
        pool: KeyPool,
        store: Store,
        policies: Policies,
        in_flight: InFlight | None = None,
    ) -> None:
        self.config = config
        self.router = router
        self.pool = pool
        self.store = store
        self.policies = policies
        self.in_flight = in_flight or InFlight()  # shared with the service a reload replaced
        self._counters_flushed = 0.0
        self.prices = Prices(config)
        self.charges = Charges(policies, store)

    async def complete(
        self,
        request: CompleteRequest,
        *,
        caller: str = LOCAL_OWNER,
        notify: Notify | None = None,
        last_resort: LastResort | None = None,
    ) -> CompleteResult:
        """Answer one turn through the route, store it, and say how it was reached."""
        self.in_flight.count += 1
        limit = self.config.limits.call_timeout_s
        try:
            with anyio.fail_after(limit):
                return await self._complete(request, caller, notify, last_resort)
        except TimeoutError:
            raise CallTimedOut(
                f"the call did not finish within call_timeout_s = {limit:g} s (fallbacks and waits included); "
                "nothing was stored — retry, or raise [limits] call_timeout_s"
            ) from None
        finally:
            self.in_flight.count -= 1

    async def precheck(self, request: CompleteRequest, caller: str = LOCAL_OWNER) -> None:
        """What `complete` checks before it spends anything, and nothing else: the request, the
        conversation's owner and room, the caller's policy. For front doors that must answer a
        refusal before they start a reply (a streamed REST reply is a 200 once begun)."""
        new = checked_messages(request, self.config)
        history = await self._history(request.conversation_id, caller, len(new))
        if not any(m.role == "user" for m in request_messages(history, new)):
            raise InvalidRequest("messages: at least one message with role 'user' is needed")
        policy = self.policies.for_token(caller)
        if policy is not None:
            policy.check(self.config, caller, request.model, request.preset)

    async def _complete(
        self, request: CompleteRequest, caller: str, notify: Notify | None, last_resort: LastResort | None
    ) -> CompleteResult:
        new = checked_messages(request, self.config)
        history = await self._history(request.conversation_id, caller, len(new))
        history = await with_attachment_bytes(self.store, history)
        blobs = await check_room(self.store, new, self.config.limits)
        context = request_messages(history, new)
        if not any(m.role == "user" for m in context):
            raise InvalidRequest("messages: at least one message with role 'user' is needed")
        policy = self.policies.for_token(caller)
        if policy is not None:
            policy.check(self.config, caller, request.model, request.preset)
        chain = self.config.route(request.model) or []
        estimate = int(raw_estimate(context))
        usd = self.prices.estimate(chain, estimate, self._most_output(chain, request.max_tokens))
        charge = await self.charges.reserve(caller, estimate + (request.max_tokens or 0), usd)
        params = CallParams(request.max_tokens, request.temperature, response_schema=request.response_schema)
        try:
            routed = await self._route(request, chain, context, params, caller, notify, last_resort)
        except BaseException:
            with anyio.CancelScope(shield=True):  # what the failed call learned about keys is kept
                await self.store.save_keys(self._keys_to_write())
                await self.charges.settle(charge, 0, 0.0)
            raise
        conversation_id = request.conversation_id or new_conversation_id()
        used = routed.completion.usage
        cost = self.prices.cost(routed.model, used.input_tokens, used.output_tokens)
        try:
            await self._store(conversation_id, request.conversation_id is None, caller, new, routed, cost, blobs)
        finally:
            with anyio.CancelScope(shield=True):
                await self.charges.settle(charge, used.input_tokens + used.output_tokens, cost or 0.0)
        return _result(routed, conversation_id, cost)

    def _most_output(self, chain: list[str], max_tokens: int | None) -> int:
        """The most output tokens any model of the route may write for this call (for the money estimate)."""
        if max_tokens is not None:
            return max_tokens
        caps = [self.config.models[name].max_output_tokens for name in chain]
        return max((c or DEFAULT_OUTPUT_ESTIMATE for c in caps), default=DEFAULT_OUTPUT_ESTIMATE)

    async def _route(
        self,
        request: CompleteRequest,
        chain: list[str],
        context: list[Message],
        params: CallParams,
        caller: str,
        notify: Notify | None,
        last_resort: LastResort | None,
    ) -> Routed:
        """The route's answer; when no key of it can answer within the caller's wait, the caller's
        own model (`last_resort`) where the config opts the route in and the caller's policy allows."""
        try:
            return await self.router.route(chain, context, params, request.max_wait_s, notify)
        except RouteFailed as failed:
            if last_resort is None or not self._may_ask_client(request, caller):
                raise
            if notify is not None:
                await notify("no key of the route can answer within the wait; asking the client's own model", "warning")
            return await last_resort(context, params, failed)

    def _may_ask_client(self, request: CompleteRequest, caller: str) -> bool:
        route = self.config.presets[request.preset].route if request.preset else request.model
        if route not in self.config.sampling.routes:
            return False
        policy = self.policies.for_token(caller)
        return policy is None or policy.rules.sampling

    async def _history(self, conversation_id: str | None, caller: str, adding: int) -> list[Turn]:
        """The caller's history so far (none for a new conversation), with room for this call's turns."""
        if conversation_id is None:
            return []
        history = await load_history(self.store, conversation_id, caller)
        limit = self.config.limits.max_conversation_turns
        if limit - len(history) < adding + 1:
            raise InvalidRequest(
                f"conversation_id: the conversation has {len(history)} turns, the limit is {limit} "
                "([limits] max_conversation_turns); start a new one"
            )
        return history

    async def _store(
        self,
        conversation_id: str,
        create: bool,
        caller: str,
        new: list[Message],
        routed: Routed,
        cost: float | None,
        blobs: list[Attachment],
    ) -> None:
        """One transaction: the user turns, the answer, what the call taught us about keys, and its usage."""
        now = time.time()
        usage = routed.completion.usage
        turns = [Turn(m.role, m.content, created_at=now, attachments=_references(m)) for m in new]
        turns.append(Turn("assistant", routed.completion.text, routed.model, routed.provider, routed.key_id, now))
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        tokens_in, tokens_out = usage.input_tokens, usage.output_tokens
        unpriced = int(cost is None)
        used = UsageRow(day, caller, routed.model, routed.key_id, 1, tokens_in, tokens_out, cost or 0.0, unpriced)
        await self.store.append_turns(
            conversation_id, turns, create=create, owner=caller, keys=self._keys_to_write(), usage=used, blobs=blobs
        )

    def _keys_to_write(self) -> list[KeyRecord]:
        """Key records for this call's transaction: state changes always, counters once a second."""
        now = time.monotonic()
        if now - self._counters_flushed >= COUNTER_FLUSH_S:
            self._counters_flushed = now
            return self.pool.take_dirty()
        return self.pool.take_dirty(state_changes_only=True)

    async def run_preset(
        self,
        name: str,
        arguments: dict[str, Any],
        base: CompleteRequest,
        *,
        caller: str = LOCAL_OWNER,
        notify: Notify | None = None,
        last_resort: LastResort | None = None,
    ) -> CompleteResult:
        """Call the preset `name`: fill its template, then complete through its route like any call.

        `base` carries what every preset tool takes besides its parameters (conversation, max wait).
        """
        preset = self.config.presets.get(name)
        if preset is None:
            raise InvalidRequest(f"preset: unknown preset {name!r}; known: {', '.join(self.config.presets) or 'none'}")
        values = {}
        for parameter, spec in preset.parameters.items():
            if arguments.get(parameter) is not None:
                values[parameter] = arguments[parameter]
            elif spec.default is not None:
                values[parameter] = spec.default
            else:
                raise InvalidRequest(f"{parameter}: required by the preset {name!r} ({spec.description or spec.type})")
        request = replace(
            base,
            prompt=render(preset.template, values),
            model=preset.route,
            system=preset.system if base.conversation_id is None else None,
            max_tokens=preset.max_tokens,
            temperature=preset.temperature,
            preset=name,
            response_schema=preset.response_schema,
            attachments=base.attachments if preset.files or preset.images else (),
        )
        return await self.complete(request, caller=caller, notify=notify, last_resort=last_resort)


def _references(message: Message) -> tuple[Attachment, ...]:
    """What a stored turn keeps of its attachments: references; the bytes go to the store once, by hash."""
    return tuple(a.reference() for a in message.attachments)


def _result(routed: Routed, conversation_id: str, cost: float | None) -> CompleteResult:
    usage = routed.completion.usage
    return CompleteResult(
        text=routed.completion.text,
        json_answer=routed.completion.data,
        model=routed.model,
        provider=routed.provider,
        key_id=routed.key_id,
        conversation_id=conversation_id,
        finish_reason=routed.completion.finish_reason,
        usage=UsageOut(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
        cost_usd=rounded(cost),
        attempts=[
            AttemptOut(
                model=a.model,
                key_id=a.key_id,
                outcome=a.outcome,
                status_code=a.status_code,
                retry_after_s=a.retry_after_s,
            )
            for a in routed.attempts
        ],
        trimmed_turns=routed.trimmed_turns,
    )
